//! A backend's list of paravirtual features, declared once with
//! [`feature_set!`](crate::feature_set): each feature's name (as the
//! platform line and the `pvops.<backend>.off=` option spell it) and its
//! bit, in the order the features line lists them.

#[doc(hidden)]
pub use bitflags as __bitflags;

/// Declares a backend's features: an enum with one variant per feature (in
/// features-line order) and a `bitflags` set of them, bit `n` for the
/// `n`-th variant.
///
/// The enum gets `ALL`, `name()`, `from_name()` and `set()`; the set gets
/// one constant per feature, `has()`, `features()` (members in order),
/// `push_names()` and `names()` (for [`Identity::features`]) and
/// `parse_off()` (the `pvops.<backend>.off=` list: comma-separated names,
/// `all` for every one; the first unknown word is handed back).
///
/// ```
/// pvops_core::feature_set! {
///     /// A feature of the example backend.
///     pub enum Feature;
///     /// A set of [`Feature`]s.
///     pub struct FeatureSet: u16 {
///         /// The fast clock.
///         Clock = "ex-clock" => CLOCK,
///         /// IPIs in one call.
///         Ipi = "ex-ipi" => IPI,
///     }
/// }
/// assert_eq!(Feature::Ipi.name(), "ex-ipi");
/// assert_eq!(FeatureSet::parse_off("ex-ipi,bogus"), (FeatureSet::IPI, Some("bogus")));
/// assert_eq!(FeatureSet::all().names().to_string(), "ex-clock,ex-ipi");
/// ```
///
/// [`Identity::features`]: crate::platform::Identity::features
#[macro_export]
macro_rules! feature_set {
    (
        $(#[$enum_meta:meta])*
        $vis:vis enum $Feature:ident;
        $(#[$set_meta:meta])*
        $set_vis:vis struct $Set:ident: $Bits:ty {
            $(
                $(#[$meta:meta])*
                $Variant:ident = $name:literal => $CONST:ident,
            )+
        }
    ) => {
        $(#[$enum_meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $Feature {
            $( $(#[$meta])* $Variant, )+
        }

        impl $Feature {
            /// Every feature, in features-line order.
            pub const ALL: [$Feature; [$(stringify!($Variant)),+].len()] =
                [$($Feature::$Variant),+];

            /// The name on the features line and in the `off=` option.
            pub const fn name(self) -> &'static str {
                match self {
                    $( $Feature::$Variant => $name, )+
                }
            }

            /// The feature called `name`.
            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.into_iter().find(|f| f.name() == name)
            }

            /// The feature as a one-member set.
            pub const fn set(self) -> $Set {
                $Set::from_bits_retain(1 << self as $Bits)
            }
        }

        $crate::feature::__bitflags::bitflags! {
            $(#[$set_meta])*
            #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
            $set_vis struct $Set: $Bits {
                $(
                    #[doc = concat!("`", $name, "`.")]
                    const $CONST = 1 << ($Feature::$Variant as $Bits);
                )+
            }
        }

        impl $Set {
            /// Whether `f` is in the set.
            pub fn has(self, f: $Feature) -> bool {
                self.contains(f.set())
            }

            /// The members, in features-line order.
            pub fn features(self) -> impl Iterator<Item = $Feature> {
                $Feature::ALL.into_iter().filter(move |f| self.has(*f))
            }

            /// Appends the members' names to `out`.
            pub fn push_names(self, out: &mut $crate::platform::Features) {
                for f in self.features() {
                    out.push(f.name());
                }
            }

            /// The members' names, as an identity's feature list.
            pub fn names(self) -> $crate::platform::Features {
                let mut out = $crate::platform::Features::new();
                self.push_names(&mut out);
                out
            }

            /// Parses an `off=` list: comma-separated names, `all` for every
            /// feature, empty words ignored. Returns the set named and the
            /// first word that named nothing (the others still count).
            pub fn parse_off(list: &str) -> (Self, Option<&str>) {
                let mut set = Self::empty();
                let mut unknown = None;
                for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
                    if word == "all" {
                        set = Self::all();
                    } else if let Some(f) = $Feature::from_name(word) {
                        set |= f.set();
                    } else if unknown.is_none() {
                        unknown = Some(word);
                    }
                }
                (set, unknown)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use std::string::ToString;

    crate::feature_set! {
        /// Test features.
        pub enum Feature;
        /// A set of them.
        pub struct FeatureSet: u8 {
            /// First.
            A = "f-a" => A,
            /// Second.
            B = "f-b" => B,
            /// Third.
            C = "f-c" => C,
        }
    }

    #[test]
    fn bits_follow_declaration_order() {
        assert_eq!(FeatureSet::A.bits(), 1);
        assert_eq!(FeatureSet::C.bits(), 4);
        assert_eq!(Feature::ALL, [Feature::A, Feature::B, Feature::C]);
        assert_eq!(Feature::B.set(), FeatureSet::B);
    }

    #[test]
    fn names_round_trip_in_order() {
        for f in Feature::ALL {
            assert_eq!(Feature::from_name(f.name()), Some(f));
        }
        assert_eq!(Feature::from_name("f-d"), None);
        let s = FeatureSet::C | FeatureSet::A;
        assert_eq!(s.names().to_string(), "f-a,f-c");
        assert_eq!(
            s.features().collect::<std::vec::Vec<_>>(),
            [Feature::A, Feature::C]
        );
    }

    #[test]
    fn off_list() {
        assert_eq!(FeatureSet::parse_off(""), (FeatureSet::empty(), None));
        assert_eq!(
            FeatureSet::parse_off(" f-b , ,nope,f-a,later"),
            (FeatureSet::A | FeatureSet::B, Some("nope"))
        );
        assert_eq!(FeatureSet::parse_off("all"), (FeatureSet::all(), None));
    }
}
