//! Writing initramfs archives in the `newc` cpio format (what Linux
//! unpacks at boot), so the nested environments need no `cpio` binary.
//!
//! Linux accepts several archives concatenated (each optionally
//! compressed); a later entry replaces an earlier one of the same name.
//! The environments keep one large base archive (kernel modules, QEMU, Xen's
//! tools) and append a small per-run one holding the guest and its
//! configuration.
//!
//! Format (Linux's `Documentation/driver-api/early-userspace/buffer-format.rst`):
//! each entry is a 110-byte ASCII header (`070701` then 13 eight-digit hex
//! fields), the NUL-terminated name padded to 4 bytes, the data padded to 4
//! bytes; the archive ends with an entry named `TRAILER!!!`.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};

/// File type bits of `st_mode`.
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// A `newc` archive being written to `W`.
#[derive(Debug)]
pub struct Writer<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
}

impl<W: Write> Writer<W> {
    /// Starts an archive.
    pub fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            next_ino: 1,
        }
    }

    /// A directory `name` (no leading `/`), mode `perm`.
    pub fn dir(&mut self, name: &str, perm: u32) -> io::Result<()> {
        self.entry(name, S_IFDIR | (perm & 0o7777), 2, (0, 0), &[])
    }

    /// A regular file `name` holding `data`.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.entry(name, S_IFREG | (perm & 0o7777), 1, (0, 0), data)
    }

    /// A symbolic link `name` pointing at `target`.
    pub fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        self.entry(name, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())
    }

    /// A character device node (e.g. `dev/console`, 5:1), which a tree
    /// built without root cannot hold.
    pub fn char_device(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.entry(name, S_IFCHR | (perm & 0o7777), 1, (major, minor), &[])
    }

    /// Every file, directory and symlink under `dir`, named relative to it,
    /// parents before children, in a stable (sorted) order.
    pub fn tree(&mut self, dir: &Path) -> Result<()> {
        self.tree_under(dir, "")
    }

    /// Every file, directory and symlink under `dir`, named as under
    /// `name` (no leading `/`; `name` itself and its parents are not
    /// written, see [`Writer::dir`]).
    pub fn tree_at(&mut self, dir: &Path, name: &str) -> Result<()> {
        let prefix = name.trim_end_matches('/');
        self.tree_under(dir, &format!("{prefix}/"))
    }

    fn tree_under(&mut self, dir: &Path, prefix: &str) -> Result<()> {
        let mut entries = fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .collect::<io::Result<Vec<_>>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else {
                bail!("{} has a name that is not UTF-8", path.display());
            };
            let name = format!("{prefix}{file_name}");
            let meta = fs::symlink_metadata(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let perm = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&path)?;
                let Some(target) = target.to_str() else {
                    bail!("{} points at a name that is not UTF-8", path.display());
                };
                self.symlink(&name, target)?;
            } else if meta.is_dir() {
                self.dir(&name, perm)?;
                self.tree_under(&path, &format!("{name}/"))?;
            } else if meta.is_file() {
                let data =
                    fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                self.file(&name, perm | (meta.mode() & 0o111), &data)?;
            } else {
                bail!(
                    "{} is neither a file, a directory nor a symlink",
                    path.display()
                );
            }
        }
        Ok(())
    }

    /// Writes the trailer and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[])?;
        // Pad the whole archive to 512 bytes, as GNU cpio does; Linux does
        // not need it, but concatenated archives stay block-aligned.
        let pad = (512 - self.written % 512) % 512;
        self.out.write_all(&vec![0; pad as usize])?;
        Ok(self.out)
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        (rmajor, rminor): (u32, u32),
        data: &[u8],
    ) -> io::Result<()> {
        let ino = self.next_ino;
        self.next_ino += 1;
        let namesize = name.len() + 1;
        let filesize = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file over 4 GiB"))?;
        let header = format!(
            "070701{ino:08x}{mode:08x}{uid:08x}{gid:08x}{nlink:08x}{mtime:08x}{filesize:08x}\
             {devmajor:08x}{devminor:08x}{rmajor:08x}{rminor:08x}{namesize:08x}{check:08x}",
            uid = 0,
            gid = 0,
            mtime = 0,
            devmajor = 0,
            devminor = 0,
            check = 0,
        );
        debug_assert_eq!(header.len(), 110);
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.align4()?;
        self.put(data)?;
        self.align4()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn align4(&mut self) -> io::Result<()> {
        let pad = (4 - self.written % 4) % 4;
        self.put(&[0u8; 3][..pad as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One entry read back: name, mode, (rdevmajor, rdevminor), data.
    type Entry = (String, u32, (u32, u32), Vec<u8>);

    /// Reads a newc archive back.
    fn parse(mut bytes: &[u8]) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut offset = 0usize;
        loop {
            assert_eq!(&bytes[..6], b"070701", "magic at {offset}");
            let field = |i: usize| {
                let s = std::str::from_utf8(&bytes[6 + 8 * i..14 + 8 * i]).unwrap();
                u32::from_str_radix(s, 16).unwrap()
            };
            let mode = field(1);
            let filesize = field(6) as usize;
            let rdev = (field(9), field(10));
            let namesize = field(11) as usize;
            let name = std::str::from_utf8(&bytes[110..110 + namesize - 1])
                .unwrap()
                .to_owned();
            assert_eq!(bytes[110 + namesize - 1], 0);
            let data_at = (110 + namesize).next_multiple_of(4);
            let data = bytes[data_at..data_at + filesize].to_vec();
            let next = (data_at + filesize).next_multiple_of(4);
            offset += next;
            bytes = &bytes[next..];
            if name == "TRAILER!!!" {
                assert!(bytes.iter().all(|&b| b == 0));
                assert_eq!((offset + bytes.len()) % 512, 0);
                return out;
            }
            out.push((name, mode, rdev, data));
        }
    }

    #[test]
    fn entries_round_trip() {
        let mut w = Writer::new(Vec::new());
        w.dir("etc", 0o755).unwrap();
        w.file("etc/a", 0o644, b"hello").unwrap();
        w.file("init", 0o755, b"#!/bin/sh\n").unwrap();
        w.symlink("bin/sh", "busybox").unwrap();
        w.char_device("dev/console", 0o600, 5, 1).unwrap();
        let bytes = w.finish().unwrap();
        let entries = parse(&bytes);
        let names: Vec<_> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["etc", "etc/a", "init", "bin/sh", "dev/console"]);
        assert_eq!(entries[0].1, 0o040_755);
        assert_eq!(entries[1].3, b"hello");
        assert_eq!(entries[2].1, 0o100_755);
        assert_eq!(entries[3].1, 0o120_777);
        assert_eq!(entries[3].3, b"busybox");
        assert_eq!(entries[4].1, 0o020_600);
        assert_eq!(entries[4].2, (5, 1));
    }

    #[test]
    fn a_tree_is_archived_parents_first() {
        let dir = std::env::temp_dir().join(format!("xtask-cpio-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("b/c")).unwrap();
        fs::write(dir.join("b/c/f"), b"123").unwrap();
        fs::write(dir.join("a"), b"").unwrap();
        std::os::unix::fs::symlink("c/f", dir.join("b/l")).unwrap();
        let mut w = Writer::new(Vec::new());
        w.tree(&dir).unwrap();
        let entries = parse(&w.finish().unwrap());
        fs::remove_dir_all(&dir).unwrap();
        let names: Vec<_> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["a", "b", "b/c", "b/c/f", "b/l"]);
        assert_eq!(entries[3].3, b"123");
        assert_eq!(entries[4].3, b"c/f");
    }

    #[test]
    fn a_tree_goes_under_a_prefix() {
        let dir = std::env::temp_dir().join(format!("xtask-cpio-at-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("k")).unwrap();
        fs::write(dir.join("k/en-us"), b"map").unwrap();
        let mut w = Writer::new(Vec::new());
        w.dir("usr", 0o755).unwrap();
        w.tree_at(&dir, "usr").unwrap();
        let entries = parse(&w.finish().unwrap());
        fs::remove_dir_all(&dir).unwrap();
        let names: Vec<_> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["usr", "usr/k", "usr/k/en-us"]);
    }
}
