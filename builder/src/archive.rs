//! Post-processing of the kernel archive, as Hermit's own build driver does it.
//!
//! The kernel and the application are linked into one binary, and both carry
//! their own copies of `core`, `alloc` and `compiler_builtins`. So every symbol
//! the kernel archive defines is made private by a prefix, except its
//! interface to the application: the `sys_*` system calls and a few entry
//! symbols. The builtins archive (memory functions, libm) gets the same
//! treatment with its own exports, and is appended. Finally every member's ELF
//! OSABI byte is set to standalone (0xFF), as Hermit images carry.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use object::read::archive::ArchiveFile;
use object::{Object, ObjectSymbol};

use crate::error::{BuildError, Result};
use crate::pipeline::run_step;

/// Kernel symbols the application links against besides `sys_*`.
pub const KERNEL_ENTRY_SYMBOLS: [&str; 4] = ["_start", "__bss_start", "mcount", "runtime_entry"];
/// Offset of the OSABI byte in an ELF header.
const EI_OSABI: usize = 7;
/// `ELFOSABI_STANDALONE`.
const OSABI_STANDALONE: u8 = 0xff;

fn bad(path: &Path, problem: impl std::fmt::Display) -> BuildError {
    BuildError::BadArtifact {
        path: path.to_owned(),
        problem: problem.to_string(),
    }
}

/// Every global symbol defined by some member of the archive at `path`,
/// sorted, and the subset defined by members whose name starts with
/// `member_prefix`.
pub fn defined_symbols(
    path: &Path,
    member_prefix: &str,
) -> Result<(BTreeSet<String>, BTreeSet<String>)> {
    let data = std::fs::read(path).map_err(BuildError::io("reading", path))?;
    let archive = ArchiveFile::parse(&*data).map_err(|err| bad(path, err))?;
    let mut all = BTreeSet::new();
    let mut own = BTreeSet::new();
    for member in archive.members() {
        let member = member.map_err(|err| bad(path, err))?;
        let bytes = member.data(&*data).map_err(|err| bad(path, err))?;
        // Archives also carry non-object members (e.g. rustc's lib.rmeta).
        let Ok(object) = object::File::parse(bytes) else {
            continue;
        };
        let from_prefix = member.name().starts_with(member_prefix.as_bytes());
        for symbol in object.symbols() {
            if symbol.is_undefined() || !symbol.is_global() {
                continue;
            }
            let Ok(name) = symbol.name() else { continue };
            if name.is_empty() {
                continue;
            }
            all.insert(name.to_owned());
            if from_prefix {
                own.insert(name.to_owned());
            }
        }
    }
    Ok((all, own))
}

/// The `--redefine-syms` file content that prefixes every symbol in `all`
/// that is not in `keep`. Itanium-mangled names get the prefix as an extra
/// leading path component, so they still demangle.
pub fn prefix_map(all: &BTreeSet<String>, keep: &BTreeSet<String>, prefix: &str) -> String {
    let mut map = String::new();
    for symbol in all.iter().filter(|s| !keep.contains(*s)) {
        // Writing to a String cannot fail.
        let _ = match symbol.strip_prefix("_ZN") {
            Some(rest) => writeln!(map, "{symbol} _ZN{}{prefix}{rest}", prefix.len()),
            None => writeln!(map, "{symbol} {prefix}_{symbol}"),
        };
    }
    map
}

/// Prefixes every defined symbol of the archive at `path` except `keep`, in place.
pub fn retain_symbols(
    objcopy: &Path,
    path: &Path,
    keep: &BTreeSet<String>,
    prefix: &str,
) -> Result<()> {
    let (all, _) = defined_symbols(path, "")?;
    let map_path = path.with_extension("redefine-syms");
    std::fs::write(&map_path, prefix_map(&all, keep, prefix))
        .map_err(BuildError::io("writing", &map_path))?;
    let mut command = Command::new(objcopy);
    command
        .arg(format!("--redefine-syms={}", map_path.display()))
        .arg(path);
    let result = run_step("prefixing symbols", &mut command);
    let _ = std::fs::remove_file(&map_path);
    result
}

/// The kernel symbols the application may use: `sys_*` defined by the
/// kernel's own members, and [`KERNEL_ENTRY_SYMBOLS`].
pub fn kernel_exports(kernel_archive: &Path) -> Result<BTreeSet<String>> {
    let (_, own) = defined_symbols(kernel_archive, "hermit-")?;
    let mut keep: BTreeSet<String> = own.into_iter().filter(|s| s.starts_with("sys_")).collect();
    if keep.is_empty() {
        return Err(bad(
            kernel_archive,
            "defines no sys_* functions: not a Hermit kernel archive",
        ));
    }
    keep.extend(KERNEL_ENTRY_SYMBOLS.map(str::to_owned));
    Ok(keep)
}

/// Appends the members of `other` to the archive at `path` (`llvm-ar qL`).
pub fn append(ar: &Path, path: &Path, other: &Path) -> Result<()> {
    let mut command = Command::new(ar);
    command.arg("qL").arg(path).arg(other);
    run_step("appending the builtins", &mut command)
}

/// Sets the OSABI byte of every ELF member of the archive at `path` to
/// standalone. Returns how many members were patched.
pub fn set_osabi_standalone(path: &Path) -> Result<usize> {
    let mut data = std::fs::read(path).map_err(BuildError::io("reading", path))?;
    let offsets: Vec<usize> = {
        let archive = ArchiveFile::parse(&*data).map_err(|err| bad(path, err))?;
        let mut offsets = Vec::new();
        for member in archive.members() {
            let member = member.map_err(|err| bad(path, err))?;
            let (offset, size) = member.file_range();
            let start = usize::try_from(offset).map_err(|err| bad(path, err))?;
            let end = start + usize::try_from(size).map_err(|err| bad(path, err))?;
            if data
                .get(start..end)
                .is_some_and(|m| m.starts_with(b"\x7fELF"))
            {
                offsets.push(start);
            }
        }
        offsets
    };
    for &offset in &offsets {
        data[offset + EI_OSABI] = OSABI_STANDALONE;
    }
    std::fs::write(path, &data).map_err(BuildError::io("writing", path))?;
    Ok(offsets.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn prefix_map_keeps_exports_and_prefixes_the_rest() {
        let all = set(&[
            "sys_read",
            "memcpy",
            "_ZN4core3fmt5write17h0123456789abcdefE",
            "_start",
        ]);
        let keep = set(&["sys_read", "_start"]);
        let map = prefix_map(&all, &keep, "hermit");
        let lines: Vec<&str> = map.lines().collect();
        assert_eq!(
            lines,
            [
                "_ZN4core3fmt5write17h0123456789abcdefE _ZN6hermit4core3fmt5write17h0123456789abcdefE",
                "memcpy hermit_memcpy",
            ]
        );
    }

    #[test]
    fn prefix_length_counts_bytes() {
        let map = prefix_map(&set(&["_ZN1a1bE"]), &BTreeSet::new(), "hermit_builtins");
        assert_eq!(map, "_ZN1a1bE _ZN15hermit_builtins1a1bE\n");
    }

    #[test]
    fn a_file_that_is_not_an_archive_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("libhermit.a");
        std::fs::write(&path, b"not an archive").unwrap();
        let err = defined_symbols(&path, "").unwrap_err();
        assert!(matches!(err, BuildError::BadArtifact { .. }), "{err}");
    }
}
