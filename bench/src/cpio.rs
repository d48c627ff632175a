//! A minimal writer of the `newc` cpio format, the one Linux unpacks as an
//! initramfs: directories, regular files, symbolic links and device nodes,
//! with fixed owners, times and inode numbers so that the same inputs give
//! the same bytes.

/// File type bits of `st_mode`.
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// The name of the entry that ends an archive.
const TRAILER: &str = "TRAILER!!!";

/// An archive being written in memory.
#[derive(Debug, Default)]
pub struct Archive {
    bytes: Vec<u8>,
    next_inode: u32,
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// A directory (`path` without a leading `/`).
    pub fn dir(&mut self, path: &str, permissions: u32) {
        self.entry(path, S_IFDIR | permissions, 2, (0, 0), b"");
    }

    /// A regular file.
    pub fn file(&mut self, path: &str, permissions: u32, data: &[u8]) {
        self.entry(path, S_IFREG | permissions, 1, (0, 0), data);
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) {
        self.entry(path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes());
    }

    /// A character device node.
    pub fn char_device(&mut self, path: &str, permissions: u32, major: u32, minor: u32) {
        self.entry(path, S_IFCHR | permissions, 1, (major, minor), b"");
    }

    /// The archive's bytes, with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry(TRAILER, 0, 1, (0, 0), b"");
        self.bytes
    }

    fn entry(&mut self, name: &str, mode: u32, links: u32, rdev: (u32, u32), data: &[u8]) {
        let inode = if name == TRAILER {
            0
        } else {
            self.next_inode += 1;
            self.next_inode
        };
        let size = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let name_size = u32::try_from(name.len() + 1).unwrap_or(u32::MAX);
        let fields = [
            inode, mode, 0, 0, links, 0, size, 0, 0, rdev.0, rdev.1, name_size, 0,
        ];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    /// Pads to a multiple of four bytes, as newc aligns headers and data.
    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One entry read back: (name, mode, rdev, data).
    type Entry = (String, u32, (u32, u32), Vec<u8>);

    /// Reads an archive back, checking the format's fixed parts.
    fn read(mut bytes: &[u8]) -> Vec<Entry> {
        let mut entries = Vec::new();
        let mut offset = 0usize;
        loop {
            assert!(offset.is_multiple_of(4));
            assert_eq!(&bytes[..6], b"070701");
            let field = |i: usize| {
                let text = std::str::from_utf8(&bytes[6 + 8 * i..14 + 8 * i]).unwrap();
                u32::from_str_radix(text, 16).unwrap()
            };
            let (mode, size, rdev, name_size) = (
                field(1),
                field(6) as usize,
                (field(9), field(10)),
                field(11) as usize,
            );
            let name_end = 110 + name_size;
            assert_eq!(bytes[name_end - 1], 0, "names end with NUL");
            let name = String::from_utf8(bytes[110..name_end - 1].to_vec()).unwrap();
            let data_start = name_end.div_ceil(4) * 4;
            let data = bytes[data_start..data_start + size].to_vec();
            let next = (data_start + size).div_ceil(4) * 4;
            offset += next;
            bytes = &bytes[next..];
            if name == TRAILER {
                assert!(bytes.is_empty());
                return entries;
            }
            entries.push((name, mode, rdev, data));
        }
    }

    #[test]
    fn entries_read_back() {
        let mut archive = Archive::new();
        archive.dir("bin", 0o755);
        archive.file("init", 0o755, b"#!/bin/sh\n");
        archive.file("bin/busybox", 0o755, b"\x7fELF12345");
        archive.symlink("bin/sh", "busybox");
        archive.char_device("dev/console", 0o600, 5, 1);
        let entries = read(&archive.finish());
        assert_eq!(
            entries,
            [
                ("bin".to_owned(), 0o040_755, (0, 0), vec![]),
                (
                    "init".to_owned(),
                    0o100_755,
                    (0, 0),
                    b"#!/bin/sh\n".to_vec()
                ),
                (
                    "bin/busybox".to_owned(),
                    0o100_755,
                    (0, 0),
                    b"\x7fELF12345".to_vec()
                ),
                ("bin/sh".to_owned(), 0o120_777, (0, 0), b"busybox".to_vec()),
                ("dev/console".to_owned(), 0o020_600, (5, 1), vec![]),
            ]
        );
    }

    #[test]
    fn the_same_inputs_give_the_same_bytes() {
        let make = || {
            let mut archive = Archive::new();
            archive.file("a", 0o644, b"x");
            archive.finish()
        };
        assert_eq!(make(), make());
        assert!(make().len().is_multiple_of(4));
    }
}
