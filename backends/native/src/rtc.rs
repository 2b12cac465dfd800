//! The CMOS real-time clock, read once at boot for the wall clock.

use x86_64::instructions::port::Port;

const CMOS_INDEX: u16 = 0x70;
const CMOS_DATA: u16 = 0x71;
/// Keep NMIs enabled (bit 7 clear) while selecting registers.
const STATUS_A: u8 = 0x0a;
const STATUS_B: u8 = 0x0b;
const UPDATE_IN_PROGRESS: u8 = 0x80;
const B_24_HOUR: u8 = 0x02;
const B_BINARY: u8 = 0x04;
const CENTURY: u8 = 0x32;

fn cmos(reg: u8) -> u8 {
    let mut index = Port::<u8>::new(CMOS_INDEX);
    let mut data = Port::<u8>::new(CMOS_DATA);
    // SAFETY: selecting and reading a CMOS register only reads the clock.
    unsafe {
        index.write(reg);
        data.read()
    }
}

/// Calendar fields as the RTC reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtcTime {
    /// Full year.
    pub year: u32,
    /// 1..=12.
    pub month: u32,
    /// 1..=31.
    pub day: u32,
    /// 0..=23.
    pub hour: u32,
    /// 0..=59.
    pub minute: u32,
    /// 0..=59.
    pub second: u32,
}

fn bcd(v: u8) -> u32 {
    u32::from(v & 0x0f) + u32::from(v >> 4) * 10
}

fn read_raw() -> [u8; 7] {
    [
        cmos(0x00),
        cmos(0x02),
        cmos(0x04),
        cmos(0x07),
        cmos(0x08),
        cmos(0x09),
        cmos(CENTURY),
    ]
}

/// Reads the RTC, twice until two reads agree (an update can land between
/// the registers), waiting for any update in progress. `None` when there is
/// no RTC (every register reads 0xff) or it never settles.
pub fn read() -> Option<RtcTime> {
    let mut prev = None;
    for _ in 0..16 {
        for _ in 0..100_000 {
            if cmos(STATUS_A) & UPDATE_IN_PROGRESS == 0 {
                break;
            }
        }
        let raw = read_raw();
        if raw.iter().all(|b| *b == 0xff) {
            return None;
        }
        if prev == Some(raw) {
            return decode(raw, cmos(STATUS_B));
        }
        prev = Some(raw);
    }
    None
}

/// Decodes raw registers (seconds, minutes, hours, day, month, year,
/// century) under status register B's format bits.
pub fn decode(raw: [u8; 7], status_b: u8) -> Option<RtcTime> {
    let conv = |v: u8| {
        if status_b & B_BINARY != 0 {
            u32::from(v)
        } else {
            bcd(v)
        }
    };
    let pm = raw[2] & 0x80 != 0;
    let mut hour = conv(raw[2] & 0x7f);
    if status_b & B_24_HOUR == 0 {
        hour %= 12;
        if pm {
            hour += 12;
        }
    }
    let century = conv(raw[6]);
    let yy = conv(raw[5]);
    let year = if (19..=99).contains(&century) {
        century * 100 + yy
    } else {
        2000 + yy
    };
    let t = RtcTime {
        year,
        month: conv(raw[4]),
        day: conv(raw[3]),
        hour,
        minute: conv(raw[1]),
        second: conv(raw[0]),
    };
    let valid = (1..=12).contains(&t.month)
        && (1..=31).contains(&t.day)
        && t.hour < 24
        && t.minute < 60
        && t.second < 61;
    valid.then_some(t)
}

/// Seconds since the Unix epoch for a UTC calendar time (proleptic
/// Gregorian, days-from-civil).
pub fn unix_seconds(t: &RtcTime) -> u64 {
    let y = i64::from(t.year) - i64::from(t.month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(t.month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(t.day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs =
        days * 86_400 + i64::from(t.hour) * 3600 + i64::from(t.minute) * 60 + i64::from(t.second);
    secs.max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_bcd_12_hour() {
        // 11:59:58 PM on 2026-11-21, BCD, 12-hour clock, century 20.
        let t = decode([0x58, 0x59, 0x91, 0x21, 0x11, 0x26, 0x20], 0).unwrap();
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute, t.second),
            (2026, 11, 21, 23, 59, 58)
        );
    }

    #[test]
    fn decodes_binary_24_hour_and_rejects_garbage() {
        let t = decode([5, 4, 3, 2, 1, 70, 19], B_BINARY | B_24_HOUR).unwrap();
        assert_eq!((t.year, t.month, t.day, t.hour), (1970, 1, 2, 3));
        assert!(decode([0, 0, 0, 0, 0x13, 0, 0x20], 0).is_none());
    }

    #[test]
    fn unix_time_known_dates() {
        let t = |year, month, day, hour, minute, second| RtcTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
        };
        assert_eq!(unix_seconds(&t(1970, 1, 1, 0, 0, 0)), 0);
        assert_eq!(unix_seconds(&t(2000, 3, 1, 0, 0, 0)), 951_868_800);
        assert_eq!(unix_seconds(&t(2026, 11, 21, 23, 29, 7)), 1_795_303_747);
    }
}
