//! `vigil-build seal`: from a built image to a signed bundle.
//!
//! 1. [`analyze`] the image: an x86-64 Hermit ELF with the reserved
//!    [`refblock::SECTION`]. Its measured regions are its non-writable load
//!    segments (code, read-only data), and RELRO (`.data.rel.ro`, `.got`, ...)
//!    as the loader leaves it after relocation at its fixed load address
//!    (`vigil_core::v1::relro`); sealing fails if a dynamic relocation would
//!    modify code or read-only data, or if one in RELRO is not
//!    `R_X86_64_RELATIVE`.
//! 2. Fill in the reference block in a copy of the image (region digests,
//!    watchdog policy), and take the image digest over that copy.
//! 3. Write the manifest (`vigil_core::v1::manifest`, canonical bytes) and sign
//!    it (raw 64-byte ed25519 signature).
//! 4. Write the bundle into a temporary directory beside the output and rename
//!    it into place (never over an existing path), so an error leaves nothing.

use std::fs;
use std::path::{Path, PathBuf};

use ed25519_dalek::Signer;
use object::elf::{PF_W, PF_X, PT_LOAD};
use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Endianness, Object, ObjectSection};
use vigil_core::v1::bundle::{IMAGE_FILE, LOADER_FILE, MANIFEST_FILE, SIGNATURE_FILE};
use vigil_core::v1::config::ServiceConfig;
use vigil_core::v1::events::{predict_pcr9, sha256};
use vigil_core::v1::manifest::{
    Artifact, Digest, ExcludedRegion, Manifest, MeasuredRegion, Provenance, ReferenceBlock, SCHEMA,
    Service, Watchdog,
};
use vigil_core::v1::refblock::{self, Reaction, Region, RegionName, Sealed};
use vigil_core::v1::relro;

use crate::keys::{self, KeyError};

/// The section every Hermit image carries (the loader checks it too).
const HERMIT_NOTE: &str = ".note.hermit.entry-version";

/// Why sealing failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The signing key cannot be used.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// An input file cannot be read.
    #[error("cannot read {what} {path}")]
    Read {
        /// Which input.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The image is not one that can be sealed.
    #[error("{path}: {problem}")]
    BadImage {
        /// The image.
        path: PathBuf,
        /// What is wrong with it.
        problem: ImageProblem,
    },
    /// `build.json` beside the image is unusable.
    #[error("{path}: not a vigil-build build.json: {problem}")]
    BadBuildInfo {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A seal setting is not allowed.
    #[error("{0}")]
    BadSetting(String),
    /// The output path exists already.
    #[error("{path} exists already; sealing never overwrites (choose another --out or remove it)")]
    OutputExists {
        /// The output directory.
        path: PathBuf,
    },
    /// Writing the bundle failed; nothing was left behind.
    #[error("cannot write the bundle {path}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What is wrong with an image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageProblem {
    /// Not parseable as a 64-bit ELF file (or cut short).
    #[error("not a 64-bit ELF file, or truncated ({0})")]
    NotElf(String),
    /// An ELF, but not an x86-64 position-independent executable.
    #[error("not an x86-64 position-independent (ET_DYN) executable")]
    WrongKind,
    /// No Hermit entry-version note.
    #[error("not a Hermit image (no {HERMIT_NOTE} section)")]
    NotHermit,
    /// No reserved reference-block section.
    #[error(
        "has no {} section: it was not built by vigil-build from this Vigil version",
        refblock::SECTION
    )]
    NoReferenceBlock,
    /// The reserved section is malformed or misplaced.
    #[error("its .vigil_ref section is unusable: {0}")]
    BadReferenceBlock(String),
    /// A measured segment would be changed in memory.
    #[error("{0}")]
    Unmeasurable(String),
}

/// The measured layout of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageLayout {
    /// The measured regions, in address order.
    pub regions: Vec<MeasuredRegion>,
    /// The loaded but unmeasured parts.
    pub excluded: Vec<ExcludedRegion>,
    /// Where the reference block is.
    pub reference_block: ReferenceBlock,
}

/// Finds an image's measured regions and reference block, and checks that
/// the measured regions are what runs: file-backed, read-only in the ELF's
/// view, and untouched by relocations.
pub fn analyze(image: &[u8]) -> Result<ImageLayout, ImageProblem> {
    let file = ElfFile64::<Endianness>::parse(image)
        .map_err(|err| ImageProblem::NotElf(err.to_string()))?;
    let header = file.elf_header();
    let endian = file.endian();
    if header.e_machine.get(endian) != object::elf::EM_X86_64
        || header.e_type.get(endian) != object::elf::ET_DYN
    {
        return Err(ImageProblem::WrongKind);
    }
    if file.section_by_name(HERMIT_NOTE).is_none() {
        return Err(ImageProblem::NotHermit);
    }
    let block = file
        .section_by_name(refblock::SECTION)
        .ok_or(ImageProblem::NoReferenceBlock)?;
    let bad_block = |problem: String| ImageProblem::BadReferenceBlock(problem);
    let (block_offset, block_len) = block
        .file_range()
        .ok_or_else(|| bad_block("it has no bytes in the file".into()))?;
    if block_len != refblock::SIZE as u64 {
        return Err(bad_block(format!(
            "it is {block_len} bytes, the v1 block is {}",
            refblock::SIZE
        )));
    }
    let block_bytes = image
        .get(block_offset as usize..(block_offset + block_len) as usize)
        .ok_or_else(|| bad_block("it lies beyond the end of the file".into()))?;
    refblock::parse(block_bytes).map_err(|err| bad_block(err.to_string()))?;
    let block_vaddr = block.address();

    let sections: Vec<(String, u64, u64)> = file
        .sections()
        .filter(|s| s.address() != 0 && s.size() > 0)
        .filter_map(|s| Some((s.name().ok()?.to_string(), s.address(), s.size())))
        .collect();
    let within = |vaddr: u64, len: u64| -> Vec<String> {
        sections
            .iter()
            .filter(|(_, addr, size)| *addr >= vaddr && addr + size <= vaddr + len && *size > 0)
            .map(|(name, _, _)| name.clone())
            .collect()
    };

    let relro_range =
        relro::find(image).map_err(|err| ImageProblem::Unmeasurable(err.to_string()))?;
    if let Some(range) = &relro_range {
        check_relro_pages(&file, range)?;
    }
    let mut regions = Vec::new();
    let mut excluded = Vec::new();
    let mut block_in_writable_file_bytes = false;
    for segment in file.elf_program_headers() {
        if segment.p_type(endian) != PT_LOAD {
            continue;
        }
        let flags = segment.p_flags(endian);
        let vaddr = segment.p_vaddr(endian);
        let offset = segment.p_offset(endian);
        let filesz = segment.p_filesz(endian);
        let memsz = segment.p_memsz(endian);
        if memsz == 0 {
            continue;
        }
        if flags & PF_W != 0 {
            if block_vaddr >= vaddr && block_vaddr + block_len <= vaddr + filesz {
                block_in_writable_file_bytes = true;
            }
            // RELRO is measured as it is after relocation; it starts its
            // segment (lld's layout), and the rest of the segment is not.
            let mut rest = vaddr..vaddr + memsz;
            if let Some(relro) = relro_range.filter(|r| r.vaddr == vaddr && r.bytes > 0) {
                regions.push(relro_region(
                    image,
                    &relro,
                    within(relro.vaddr, relro.bytes),
                )?);
                rest.start = relro.vaddr + relro.bytes;
                if rest.is_empty() {
                    continue;
                }
                if rest.end <= relro.vaddr + relro.mem_bytes {
                    excluded.push(ExcludedRegion {
                        name: format!("relro-pad@{:#x}", rest.start),
                        vaddr: rest.start,
                        bytes: rest.end - rest.start,
                        reason: "RELRO's zero padding up to its page end: not in the file, \
                                 read-only at run time"
                            .into(),
                    });
                    continue;
                }
            }
            let name = if filesz == 0 { "bss" } else { "data" };
            excluded.push(ExcludedRegion {
                name: format!("{name}@{:#x}", rest.start),
                vaddr: rest.start,
                bytes: rest.end - rest.start,
                reason: format!(
                    "writable segment ({}): its content changes at run time",
                    within(rest.start, rest.end - rest.start).join(", ")
                ),
            });
            continue;
        }
        if filesz != memsz {
            return Err(ImageProblem::Unmeasurable(format!(
                "the read-only segment at {vaddr:#x} is {memsz:#x} bytes in memory but \
                 {filesz:#x} in the file"
            )));
        }
        let base = if flags & PF_X != 0 { "code" } else { "rodata" };
        let count = regions
            .iter()
            .filter(|r: &&MeasuredRegion| r.name.starts_with(base))
            .count();
        let name = if count == 0 {
            base.to_string()
        } else {
            format!("{base}-{}", count + 1)
        };
        let bytes = image
            .get(offset as usize..(offset + filesz) as usize)
            .ok_or_else(|| ImageProblem::NotElf("a load segment lies beyond the end".into()))?;
        regions.push(MeasuredRegion {
            name,
            sections: within(vaddr, memsz),
            vaddr,
            file_offset: offset,
            bytes: filesz,
            sha256: Digest(sha256(bytes)),
            relocated_at: None,
        });
    }
    if regions.is_empty() || regions.len() > refblock::MAX_REGIONS {
        return Err(ImageProblem::Unmeasurable(format!(
            "{} read-only load segments; a seal measures 1 to {}",
            regions.len(),
            refblock::MAX_REGIONS
        )));
    }
    if !block_in_writable_file_bytes {
        return Err(bad_block(
            "it does not lie in the file-backed part of a writable load segment".into(),
        ));
    }
    regions.sort_by_key(|r| r.vaddr);
    if let Some(relocations) = file.dynamic_relocations() {
        for (offset, _) in relocations {
            // A relocated region's relocations were checked and applied by
            // `relro::relocate`.
            if let Some(region) = regions.iter().find(|r| {
                r.relocated_at.is_none()
                    && offset.saturating_add(8) > r.vaddr
                    && offset < r.vaddr + r.bytes
            }) {
                return Err(ImageProblem::Unmeasurable(format!(
                    "a dynamic relocation at {offset:#x} would modify the measured region {} \
                     ({:#x}+{:#x}); link read-only data without text relocations",
                    region.name, region.vaddr, region.bytes
                )));
            }
        }
    }
    excluded.push(ExcludedRegion {
        name: "reference-block".into(),
        vaddr: block_vaddr,
        bytes: block_len,
        reason: "filled in by sealing, and at boot with the per-boot key; \
                 covered by the image digest"
            .into(),
    });
    excluded.sort_by_key(|r| r.vaddr);
    Ok(ImageLayout {
        regions,
        excluded,
        reference_block: ReferenceBlock {
            section: refblock::SECTION.into(),
            vaddr: block_vaddr,
            file_offset: block_offset,
            bytes: block_len,
        },
    })
}

/// The `relro` region: RELRO's file bytes with the image's relocations
/// applied for [`relro::KERNEL_LOAD_ADDRESS`], where the loader always puts
/// the kernel.
fn relro_region(
    image: &[u8],
    range: &relro::RelroRange,
    sections: Vec<String>,
) -> Result<MeasuredRegion, ImageProblem> {
    let unmeasurable = |err: relro::RelroError| {
        ImageProblem::Unmeasurable(format!("cannot predict RELRO after relocation: {err}"))
    };
    let len = usize::try_from(range.bytes)
        .map_err(|_| ImageProblem::NotElf("RELRO is too large".into()))?;
    let mut bytes = vec![0u8; len];
    relro::relocate(image, range, relro::KERNEL_LOAD_ADDRESS, &mut bytes).map_err(unmeasurable)?;
    Ok(MeasuredRegion {
        name: "relro".into(),
        sections,
        vaddr: range.vaddr,
        file_offset: range.file_offset,
        bytes: range.bytes,
        sha256: Digest(sha256(&bytes)),
        relocated_at: Some(relro::KERNEL_LOAD_ADDRESS),
    })
}

/// The guest write-protects RELRO by whole 4 KiB pages, widened outwards
/// (`protect` in the service): so no byte of any load segment outside RELRO
/// (its file bytes and its zero padding) may share one of those pages.
fn check_relro_pages(
    file: &ElfFile64<'_, Endianness>,
    relro: &relro::RelroRange,
) -> Result<(), ImageProblem> {
    const PAGE: u64 = 4096;
    let endian = file.endian();
    let pages = relro.vaddr / PAGE * PAGE..(relro.vaddr + relro.bytes).div_ceil(PAGE) * PAGE;
    let relro_end = relro.vaddr + relro.mem_bytes.max(relro.bytes);
    for segment in file.elf_program_headers() {
        if segment.p_type(endian) != PT_LOAD {
            continue;
        }
        let start = segment.p_vaddr(endian);
        let end = start + segment.p_memsz(endian);
        // The parts of this segment outside RELRO.
        for (from, to) in [(start, end.min(relro.vaddr)), (start.max(relro_end), end)] {
            if from < to && from < pages.end && pages.start < to {
                return Err(ImageProblem::Unmeasurable(format!(
                    "RELRO ({:#x}+{:#x}) shares a page with other loaded bytes at {from:#x}..{to:#x}; \
                     write-protecting it would make those read-only (link with lld's default \
                     page-padded RELRO)",
                    relro.vaddr, relro.bytes
                )));
            }
        }
    }
    Ok(())
}

/// What to seal, and how.
#[derive(Clone, Debug)]
pub struct SealOptions {
    /// The directory `vigil-build build` wrote (image, loader, build.json).
    pub image_dir: PathBuf,
    /// The ed25519 private key (PKCS#8 PEM, mode 0600).
    pub key: PathBuf,
    /// The bundle directory to create.
    pub out: PathBuf,
    /// The service's name.
    pub service_name: String,
    /// The service's version.
    pub service_version: String,
    /// The security version (rollback protection).
    pub security_version: u64,
    /// The watchdog interval in milliseconds.
    pub interval_ms: u32,
    /// The watchdog reaction.
    pub reaction: Reaction,
    /// The service settings that go on the kernel command line.
    pub service: ServiceConfig,
}

/// The fields of `build.json` a manifest records.
#[derive(Debug, serde::Deserialize)]
struct BuildJson {
    flavor: String,
    /// A test image (`vigil-build build --test-hooks`).
    #[serde(default)]
    test_hooks: bool,
    toolchain: String,
    rustc: String,
    kernel: BuildKernel,
    source_revision: Option<String>,
    source_date_epoch: u64,
}

#[derive(Debug, serde::Deserialize)]
struct BuildKernel {
    #[serde(rename = "crate")]
    name: String,
    version: String,
    features: Vec<String>,
}

/// What [`seal`] made.
#[derive(Debug)]
pub struct Sealing {
    /// The bundle directory.
    pub bundle: PathBuf,
    /// The manifest as written.
    pub manifest: Manifest,
    /// The signing key's fingerprint.
    pub key_fingerprint: String,
}

/// The bundle's content, in memory.
#[derive(Debug)]
pub struct SealedBundle {
    /// The sealed image.
    pub image: Vec<u8>,
    /// The loader, unchanged.
    pub loader: Vec<u8>,
    /// The manifest.
    pub manifest: Manifest,
    /// Its canonical bytes.
    pub manifest_bytes: Vec<u8>,
    /// The signature over them.
    pub signature: [u8; 64],
}

/// Seals in memory: everything [`seal`] does but writing.
pub fn seal_bytes(
    image: &[u8],
    loader: &[u8],
    provenance: Provenance,
    options: &SealOptions,
    key: &ed25519_dalek::SigningKey,
    image_path: &Path,
) -> Result<SealedBundle, SealError> {
    let bad_image = |problem| SealError::BadImage {
        path: image_path.into(),
        problem,
    };
    if options.service_name.is_empty() {
        return Err(SealError::BadSetting("the service name is empty".into()));
    }
    options
        .service
        .validate()
        .map_err(|err| SealError::BadSetting(format!("service settings: {err}")))?;
    let layout = analyze(image).map_err(bad_image)?;
    let regions: Vec<Region> = layout
        .regions
        .iter()
        .map(|r| {
            Ok(Region {
                name: RegionName::new(&r.name)
                    .map_err(|err| bad_image(ImageProblem::Unmeasurable(err.to_string())))?,
                vaddr: r.vaddr,
                len: r.bytes,
                sha256: r.sha256.0,
            })
        })
        .collect::<Result<_, SealError>>()?;
    let block = Sealed::new(
        layout.reference_block.vaddr,
        options.reaction,
        options.interval_ms,
        &regions,
    )
    .map_err(|err| SealError::BadSetting(err.to_string()))?;
    let mut sealed = image.to_vec();
    let at = layout.reference_block.file_offset as usize;
    sealed[at..at + refblock::SIZE].copy_from_slice(&block.emit());

    let image_sha256 = sha256(&sealed);
    let loader_sha256 = sha256(loader);
    let manifest = Manifest {
        schema: SCHEMA.into(),
        service: Service {
            name: options.service_name.clone(),
            version: options.service_version.clone(),
            security_version: options.security_version,
        },
        image: Artifact {
            file: IMAGE_FILE.into(),
            bytes: sealed.len() as u64,
            sha256: Digest(image_sha256),
        },
        loader: Artifact {
            file: LOADER_FILE.into(),
            bytes: loader.len() as u64,
            sha256: Digest(loader_sha256),
        },
        kernel_cmdline: options.service.kernel_cmdline(),
        regions: layout.regions,
        excluded: layout.excluded,
        reference_block: layout.reference_block,
        watchdog: Watchdog {
            interval_ms: options.interval_ms,
            reaction: options.reaction,
        },
        pcr9: Digest(predict_pcr9(&loader_sha256, &image_sha256)),
        provenance,
    };
    manifest
        .validate()
        .map_err(|err| SealError::BadSetting(err.to_string()))?;
    let manifest_bytes = manifest.emit();
    let signature = key.sign(&manifest_bytes).to_bytes();
    Ok(SealedBundle {
        image: sealed,
        loader: loader.to_vec(),
        manifest,
        manifest_bytes,
        signature,
    })
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, SealError> {
    fs::read(path).map_err(|source| SealError::Read {
        what,
        path: path.into(),
        source,
    })
}

/// Reads the provenance from `build.json`.
pub fn read_provenance(path: &Path) -> Result<Provenance, SealError> {
    let bytes = read("build info", path)?;
    let info: BuildJson =
        serde_json::from_slice(&bytes).map_err(|err| SealError::BadBuildInfo {
            path: path.into(),
            problem: err.to_string(),
        })?;
    Ok(Provenance {
        // A test image says so in the signed manifest.
        flavor: if info.test_hooks {
            format!("{}+test-hooks", info.flavor)
        } else {
            info.flavor
        },
        toolchain: info.toolchain,
        rustc: info.rustc,
        kernel: format!("{} {}", info.kernel.name, info.kernel.version),
        kernel_features: info.kernel.features,
        source_revision: info.source_revision.unwrap_or_else(|| "unknown".into()),
        source_date_epoch: info.source_date_epoch,
    })
}

/// Seals the image in `options.image_dir` into the bundle `options.out`.
pub fn seal(options: &SealOptions) -> Result<Sealing, SealError> {
    if options.out.symlink_metadata().is_ok() {
        return Err(SealError::OutputExists {
            path: options.out.clone(),
        });
    }
    let key = keys::read_signing_key(&options.key)?;
    let image_path = options.image_dir.join(IMAGE_FILE);
    let image = read("image", &image_path)?;
    let loader = read("loader", &options.image_dir.join(LOADER_FILE))?;
    let provenance = read_provenance(&options.image_dir.join("build.json"))?;
    let bundle = seal_bytes(&image, &loader, provenance, options, &key, &image_path)?;
    write_bundle(&options.out, &bundle)?;
    Ok(Sealing {
        bundle: options.out.clone(),
        manifest: bundle.manifest,
        key_fingerprint: vigil_core::v1::bundle::key_fingerprint(&key.verifying_key()),
    })
}

/// Writes the bundle into a fresh temporary directory beside `out`, then
/// renames it to `out`, failing if `out` appeared meanwhile. Nothing is left
/// behind on error.
pub fn write_bundle(out: &Path, bundle: &SealedBundle) -> Result<(), SealError> {
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SealError::Write { path, source }
    };
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out.file_name().ok_or_else(|| {
        SealError::BadSetting(format!("{} is not a directory name", out.display()))
    })?;
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{}.partial-", name.to_string_lossy()))
        .tempdir_in(&parent)
        .map_err(write_err(&parent))?;
    for (file, bytes) in [
        (IMAGE_FILE, &bundle.image[..]),
        (LOADER_FILE, &bundle.loader[..]),
        (MANIFEST_FILE, &bundle.manifest_bytes[..]),
        (SIGNATURE_FILE, &bundle.signature[..]),
    ] {
        let path = staging.path().join(file);
        fs::write(&path, bytes)
            .and_then(|()| fs::File::open(&path)?.sync_all())
            .map_err(write_err(&path))?;
    }
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        staging.path(),
        rustix::fs::CWD,
        out,
        rustix::fs::RenameFlags::NOREPLACE,
    )
    .map_err(|errno| {
        if errno == rustix::io::Errno::EXIST {
            SealError::OutputExists { path: out.into() }
        } else {
            SealError::Write {
                path: out.into(),
                source: errno.into(),
            }
        }
    })?;
    // The directory now lives at `out`; nothing is left to clean up.
    let _ = staging.keep();
    Ok(())
}
