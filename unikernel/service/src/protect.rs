//! W^X for the running image: the sealed regions write-protected in the
//! page tables, and the kernel's record of writes that hit them.
//!
//! The regions come from the sealed reference block, the one source of what
//! the image's code and read-only data are (the watchdog hashes the same
//! ones). After reading it, the service asks the kernel (`sys_mprotect`,
//! made to honour its flags by kernel patches 0027a–c) to make every `code`
//! region read + execute, every other region (read-only data) read-only and
//! not executable, and the rest of the image's 2 MiB pages (writable data,
//! `.bss`, the unused tail) writable and not executable. The loader already
//! maps all other RAM not executable. Hermit sets CR0.WP, so a write to a
//! protected page faults in ring 0 too; kernel patch 0028a records such a
//! write, prints it and ends the task that made it, and [`Faults`] reads the
//! record for the watchdog, which reacts as to a changed region.
//!
//! The `relro` region (RELRO as relocated by the loader: `.data.rel.ro`,
//! `.got`, ...) is read-only data like the others. It lies in the image's
//! first writable load segment, and its bytes need not end on a page: like
//! every region it is widened to whole pages, which is safe because sealing
//! refuses an image where another loaded byte shares one of its pages (lld
//! pads RELRO to its page end).
//!
//! An unsealed image has no regions: it protects nothing and says so.

use std::fmt;
use std::ops::Range;

use crate::watchdog::Watched;

/// The page size protection works in.
pub const PAGE: u64 = 4096;
/// The granule the loader maps the image with (the image starts on one).
pub const LARGE_PAGE: u64 = 2 << 20;

/// What a span of pages may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Code: read and execute, never write.
    ReadExecute,
    /// Read-only data: read only.
    ReadOnly,
    /// Everything else of the image: read and write, never execute.
    ReadWrite,
}

impl Access {
    /// Hermit's `PROT_*` bits for this access.
    pub fn prot(self) -> u32 {
        const READ: u32 = 1;
        const WRITE: u32 = 2;
        const EXEC: u32 = 4;
        match self {
            Self::ReadExecute => READ | EXEC,
            Self::ReadOnly => READ,
            Self::ReadWrite => READ | WRITE,
        }
    }

    /// How it reads in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadExecute => "r-x",
            Self::ReadOnly => "r--",
            Self::ReadWrite => "rw-",
        }
    }
}

/// One page-aligned span and its access.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    /// Page-aligned runtime addresses.
    pub pages: Range<u64>,
    /// What it may be used for.
    pub access: Access,
}

/// Why the image cannot be protected as sealed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// Two regions of different access share a page.
    SharedPage {
        /// The page.
        page: u64,
    },
    /// A region lies outside the image.
    OutsideImage {
        /// The region's name.
        region: String,
    },
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SharedPage { page } => write!(
                f,
                "the page at {page:#x} holds regions of different access (code and data)"
            ),
            Self::OutsideImage { region } => {
                write!(f, "region `{region}` lies outside the image")
            }
        }
    }
}

/// The access a sealed region gets: `code` regions (sealing names the
/// image's executable segments `code`, `code-2`, ...) are read + execute,
/// every other region is read-only data.
pub fn access_of(name: &str) -> Access {
    if name == "code" || name.starts_with("code-") {
        Access::ReadExecute
    } else {
        Access::ReadOnly
    }
}

const fn down(value: u64, align: u64) -> u64 {
    value / align * align
}

const fn up(value: u64, align: u64) -> u64 {
    value.div_ceil(align) * align
}

/// The spans to protect, in the order to apply them: the regions (code
/// first, so that the code making the calls never loses execute), then the
/// rest of `image` (its runtime addresses), up to the end of its last 2 MiB
/// page, as writable data. Regions are widened to whole pages; two regions
/// of different access on one page are refused.
pub fn plan(regions: &[Watched], image: Range<u64>) -> Result<Vec<Span>, PlanError> {
    let mut spans: Vec<Span> = Vec::new();
    for watched in regions {
        let name = watched.sealed.name.as_str();
        let start = watched.address;
        let end = start.saturating_add(watched.sealed.len);
        if start < image.start || end > image.end || start >= end {
            return Err(PlanError::OutsideImage {
                region: name.to_owned(),
            });
        }
        spans.push(Span {
            pages: down(start, PAGE)..up(end, PAGE),
            access: access_of(name),
        });
    }
    spans.sort_by_key(|s| s.pages.start);
    for pair in spans.windows(2) {
        if pair[1].pages.start < pair[0].pages.end && pair[0].access != pair[1].access {
            return Err(PlanError::SharedPage {
                page: pair[1].pages.start,
            });
        }
    }
    // The rest: every page of the image's 2 MiB pages that no region covers.
    let mut rest = Vec::new();
    let mut at = down(image.start, LARGE_PAGE);
    for span in &spans {
        if span.pages.start > at {
            rest.push(at..span.pages.start);
        }
        at = at.max(span.pages.end);
    }
    let end = up(image.end, LARGE_PAGE);
    if end > at {
        rest.push(at..end);
    }
    spans.sort_by_key(|s| (s.access != Access::ReadExecute, s.pages.start));
    spans.extend(rest.into_iter().map(|pages| Span {
        pages,
        access: Access::ReadWrite,
    }));
    Ok(spans)
}

/// What protection the running image got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Protection {
    /// Not attempted: the image is not sealed, or this is not a guest.
    Off(&'static str),
    /// Applied: pages per access.
    Applied {
        /// Read + execute pages.
        code_pages: u64,
        /// Read-only pages.
        read_only_pages: u64,
        /// Writable, non-executable pages of the image.
        data_pages: u64,
    },
    /// Refused or failed: why (the watchdog still runs).
    Failed(String),
}

impl Protection {
    /// The word `/v1/integrity` shows.
    pub fn state(&self) -> &'static str {
        match self {
            Self::Off(_) => "off",
            Self::Applied { .. } => "applied",
            Self::Failed(_) => "failed",
        }
    }
}

/// Page counts per access of a plan.
pub fn applied(spans: &[Span]) -> Protection {
    let pages = |access| -> u64 {
        spans
            .iter()
            .filter(|s| s.access == access)
            .map(|s| (s.pages.end - s.pages.start) / PAGE)
            .sum()
    };
    Protection::Applied {
        code_pages: pages(Access::ReadExecute),
        read_only_pages: pages(Access::ReadOnly),
        data_pages: pages(Access::ReadWrite),
    }
}

/// Applies `spans` with `mprotect` (on Hermit; elsewhere nothing happens
/// and it says so). Stops at the first failure.
pub fn apply(spans: &[Span]) -> Protection {
    #[cfg(target_os = "hermit")]
    {
        for span in spans {
            let Ok(len) = usize::try_from(span.pages.end - span.pages.start) else {
                return Protection::Failed(format!("span at {:#x} too long", span.pages.start));
            };
            let errno = kernel::mprotect(span.pages.start, len, span.access.prot());
            if errno != 0 {
                return Protection::Failed(format!(
                    "mprotect({:#x}, {len:#x}, {}) failed: error {}",
                    span.pages.start,
                    span.access.as_str(),
                    -errno
                ));
            }
        }
        applied(spans)
    }
    #[cfg(not(target_os = "hermit"))]
    {
        let _ = spans;
        Protection::Off("not a Hermit guest")
    }
}

/// The image's runtime extent: from the load offset (link-time address 0)
/// to the end of its last segment (the linker's `_end`).
pub fn image_extent(load_offset: u64) -> Range<u64> {
    #[cfg(target_os = "hermit")]
    {
        load_offset..kernel::image_end()
    }
    #[cfg(not(target_os = "hermit"))]
    {
        load_offset..load_offset
    }
}

/// The kernel's record of writes to protected pages (kernel patch 0028b).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteFaults {
    /// Writes stopped since boot (each ended the task that made it).
    pub count: u64,
    /// The address the first one wrote to (0 until known).
    pub first_address: u64,
    /// The address of the instruction that made it.
    pub first_ip: u64,
}

/// Where the watchdog reads [`WriteFaults`] from.
pub trait Faults: Send + Sync + 'static {
    /// The record now.
    fn read(&self) -> WriteFaults;
}

/// The kernel's record (on Hermit; elsewhere always empty).
#[derive(Debug, Clone, Copy)]
pub struct KernelFaults;

impl Faults for KernelFaults {
    fn read(&self) -> WriteFaults {
        #[cfg(target_os = "hermit")]
        {
            kernel::write_faults()
        }
        #[cfg(not(target_os = "hermit"))]
        {
            WriteFaults::default()
        }
    }
}

#[cfg(target_os = "hermit")]
mod kernel {
    //! The three calls into the kernel: `sys_mprotect` (declared by
    //! `hermit-abi`), `sys_vigil_write_faults` (kernel patch 0028b) and the
    //! linker's `_end`.

    use super::WriteFaults;

    #[allow(unsafe_code)]
    unsafe extern "C" {
        fn sys_vigil_write_faults(out: *mut WriteFaults) -> i32;
        /// The end of the image's last segment (defined by the linker).
        static _end: u8;
    }

    pub(super) fn mprotect(start: u64, len: usize, prot: u32) -> i32 {
        // SAFETY: `start..start + len` is a page-aligned span of this image's
        // own 2 MiB pages (`plan`); changing its access changes no byte, and
        // code spans keep execute (they are applied first, read + execute).
        #[allow(unsafe_code)]
        unsafe {
            hermit_abi::mprotect(start as usize as *mut u8, len, prot)
        }
    }

    pub(super) fn write_faults() -> WriteFaults {
        let mut out = WriteFaults::default();
        // SAFETY: `out` is a valid, writable `WriteFaults`, the `repr(C)`
        // layout the kernel writes (three u64).
        #[allow(unsafe_code)]
        let status = unsafe { sys_vigil_write_faults(&mut out) };
        if status == 0 {
            out
        } else {
            WriteFaults::default()
        }
    }

    pub(super) fn image_end() -> u64 {
        std::ptr::addr_of!(_end) as u64
    }
}

/// Test images only (feature `test-hooks`, `vigil-build build
/// --test-hooks`): a deliberate write to protected memory.
#[cfg(feature = "test-hooks")]
pub mod test_hooks {
    use std::time::Duration;

    use crate::console_line;

    /// How long after the service starts the write comes: after the
    /// watchdog's first checks at the default interval.
    pub const WRITE_AFTER: Duration = Duration::from_secs(3);

    /// Starts a thread that, [`WRITE_AFTER`] from now, writes the byte at
    /// runtime address `address` (in a code region) back unchanged. With
    /// write protection the kernel stops the write and ends the thread;
    /// without, the write changes nothing and the thread says so.
    pub fn write_later(address: u64) {
        let spawned = std::thread::Builder::new()
            .name("vigil-test-write".into())
            .spawn(move || {
                std::thread::sleep(WRITE_AFTER);
                console_line!("vigil-test: writing to protected memory at {address:#x}");
                let at = address as usize as *mut u8;
                // SAFETY: test images only. `address` is a byte of this
                // image's own code (a sealed region, moved by the load
                // offset); it is read and the same value written back, so
                // even an unprotected image runs the same code afterwards.
                #[allow(unsafe_code)]
                unsafe {
                    at.write_volatile(at.read_volatile());
                }
                console_line!("vigil-test: the write to {address:#x} was NOT stopped");
            });
        if let Err(error) = spawned {
            console_line!("vigil-test: cannot start the writing thread: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use vigil_core::v1::refblock::{Region, RegionName};

    use super::*;

    fn watched(name: &str, address: u64, len: u64) -> Watched {
        Watched {
            sealed: Region {
                name: RegionName::new(name).unwrap(),
                vaddr: address - 0x20_0000,
                len,
                sha256: [0; 32],
            },
            address,
        }
    }

    /// The hvm image's layout at load offset 0x200000.
    fn today() -> Vec<Watched> {
        vec![
            watched("rodata", 0x20_0000, 0x2c494),
            watched("code", 0x22d4a0, 0xea6e6),
        ]
    }

    #[test]
    fn code_first_then_read_only_then_the_rest_writable() {
        let spans = plan(&today(), 0x20_0000..0x32f090).unwrap();
        assert_eq!(
            spans,
            [
                Span {
                    pages: 0x22d000..0x318000,
                    access: Access::ReadExecute
                },
                Span {
                    pages: 0x20_0000..0x22d000,
                    access: Access::ReadOnly
                },
                Span {
                    pages: 0x318000..0x40_0000,
                    access: Access::ReadWrite
                },
            ]
        );
        assert_eq!(
            applied(&spans),
            Protection::Applied {
                code_pages: 0xeb,
                read_only_pages: 0x2d,
                data_pages: 0xe8,
            }
        );
    }

    /// The hvm image sealed with RELRO (link layout of the merge build):
    /// RELRO starts its segment at 0x120b28 (its page holds nothing else)
    /// and its file bytes end at 0x1338f0, in its last page, which lld pads
    /// (`.relro_padding`) up to 0x134000; the writable data (`.vigil_ref`,
    /// `.data`, `.bss`) starts on the next page. Sealing checks that no
    /// other loaded byte shares RELRO's pages, so widening is safe.
    #[test]
    fn relro_is_read_only_by_whole_pages_and_data_after_it_stays_writable() {
        let regions = [
            watched("rodata", 0x20_0000, 0x2d2f4),
            watched("code", 0x22e300, 0xf1826),
            watched("relro", 0x320b28, 0x12dc8),
        ];
        let spans = plan(&regions, 0x20_0000..0x3374f0).unwrap();
        assert_eq!(
            spans[2],
            Span {
                pages: 0x320000..0x334000,
                access: Access::ReadOnly
            }
        );
        assert_eq!(
            spans[3],
            Span {
                pages: 0x334000..0x40_0000,
                access: Access::ReadWrite
            }
        );
    }

    #[test]
    fn gaps_between_regions_are_data() {
        let regions = [
            watched("rodata", 0x20_0000, 0x1000),
            watched("code", 0x20_3000, 0x10),
            watched("relro", 0x20_5000, 0x800),
        ];
        let spans = plan(&regions, 0x20_0000..0x20_6000).unwrap();
        let rw: Vec<_> = spans
            .iter()
            .filter(|s| s.access == Access::ReadWrite)
            .map(|s| s.pages.clone())
            .collect();
        assert_eq!(
            rw,
            [
                0x20_1000..0x20_3000,
                0x20_4000..0x20_5000,
                0x20_6000..0x40_0000
            ]
        );
        assert_eq!(access_of("relro"), Access::ReadOnly);
        assert_eq!(access_of("code-2"), Access::ReadExecute);
        assert_eq!(access_of("codex"), Access::ReadOnly);
    }

    #[test]
    fn code_and_data_on_one_page_are_refused() {
        let regions = [
            watched("rodata", 0x20_0000, 0x1800),
            watched("code", 0x20_1800, 0x10),
        ];
        assert_eq!(
            plan(&regions, 0x20_0000..0x20_2000),
            Err(PlanError::SharedPage { page: 0x20_1000 })
        );
        let outside = [watched("code", 0x20_1000, 0x10)];
        assert!(matches!(
            plan(&outside, 0x20_2000..0x20_3000),
            Err(PlanError::OutsideImage { .. })
        ));
    }

    #[test]
    fn no_regions_only_the_data() {
        assert_eq!(
            applied(&[]),
            Protection::Applied {
                code_pages: 0,
                read_only_pages: 0,
                data_pages: 0
            }
        );
        assert_eq!(apply(&[]).state(), "off");
    }
}
