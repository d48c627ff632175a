//! `vigil-build build`: kernel, builtins, archive post-processing, service and
//! loader, from a clean checkout to the two bootable files.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use object::{Object, ObjectSection};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::archive;
use crate::error::{BuildError, Result};
use crate::flavor::Flavor;
use crate::toolchain::Toolchain;

/// The kernel release the image is built from.
pub const KERNEL_VERSION: &str = "0.11.0";
/// File name of the built image (kernel and service in one ELF).
pub const IMAGE_FILE: &str = "vigil-image";
/// File name of the built loader.
pub const LOADER_FILE: &str = "vigil-loader";
/// File name of the build description.
pub const INFO_FILE: &str = "build.json";
/// Schema name written into [`BuildInfo::schema`].
pub const INFO_SCHEMA: &str = "vigil.build-info.v1";

const KERNEL_TARGET: &str = "x86_64-unknown-none";
const APP_TARGET: &str = "x86_64-unknown-hermit";
/// Bumped whenever the post-processing changes, to invalidate cached archives.
const POSTPROCESS_VERSION: &str = "1";

/// What to build, and where.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// The Vigil checkout.
    pub project_dir: PathBuf,
    /// Which image.
    pub flavor: Flavor,
    /// Where the artifacts go (default: `target/vigil/<flavor>`).
    pub out_dir: Option<PathBuf>,
    /// Only step lines, no cargo output.
    pub quiet: bool,
    /// A test image: the service with its `test-hooks` feature (a
    /// deliberate write to protected memory after start). Never for
    /// production; its default output directory is
    /// `target/vigil/<flavor>-test-hooks`, and sealing names it in the
    /// manifest's flavor.
    pub test_hooks: bool,
}

/// A built file, as recorded in `build.json`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Artifact {
    /// File name inside the output directory.
    pub file: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Lower-case hex SHA-256 of the file.
    pub sha256: String,
}

/// The kernel that went into the image.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct KernelInfo {
    /// Crate name on the registry.
    #[serde(rename = "crate")]
    pub krate: &'static str,
    /// Its version.
    pub version: &'static str,
    /// The cargo features it was built with.
    pub features: Vec<&'static str>,
}

/// `build.json`: what was built, from what, with what.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct BuildInfo {
    /// Always [`INFO_SCHEMA`].
    pub schema: &'static str,
    /// The flavor.
    pub flavor: Flavor,
    /// Whether the service has its test hooks (absent when not).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub test_hooks: bool,
    /// The NIC the image drives.
    pub nic: &'static str,
    /// The QEMU machine it is meant for.
    pub machine: &'static str,
    /// The image.
    pub image: Artifact,
    /// The loader.
    pub loader: Artifact,
    /// The pinned toolchain.
    pub toolchain: String,
    /// `rustc -V` of it.
    pub rustc: String,
    /// The kernel.
    pub kernel: KernelInfo,
    /// `git rev-parse HEAD` of the checkout (`-dirty` if it had changes), if known.
    pub source_revision: Option<String>,
    /// The timestamp builds are pinned to.
    pub source_date_epoch: u64,
}

/// Numbered step lines on stderr.
struct Progress {
    total: usize,
    current: usize,
    started: Instant,
}

impl Progress {
    fn step(&mut self, what: &str) -> Instant {
        self.current += 1;
        eprintln!("[{}/{}] {what}", self.current, self.total);
        Instant::now()
    }

    fn done(&self, since: Instant, note: &str) {
        let note = if note.is_empty() {
            String::new()
        } else {
            format!(": {note}")
        };
        eprintln!("      done in {:.1} s{note}", since.elapsed().as_secs_f64());
    }
}

/// A command line as text, for error messages.
pub fn display_command(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `command` to completion, output going to the terminal.
pub fn run_step(step: &'static str, command: &mut Command) -> Result<()> {
    let status = command.status().map_err(|source| BuildError::Spawn {
        step,
        program: command.get_program().to_string_lossy().into_owned(),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(BuildError::StepFailed {
            step,
            command: display_command(command),
            status: status.to_string(),
        })
    }
}

/// Lower-case hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(BuildError::io("reading", path))?;
    Ok(hex(&Sha256::digest(&bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where everything goes.
struct Paths {
    project: PathBuf,
    unikernel: PathBuf,
    work: PathBuf,
    out: PathBuf,
}

impl Paths {
    fn new(options: &BuildOptions) -> Result<Self> {
        let project = options.project_dir.clone();
        let unikernel = project.join("unikernel");
        if !unikernel.join("Cargo.toml").is_file() {
            return Err(BuildError::NotAProject { path: project });
        }
        let work = project.join("target").join("vigil");
        let out = options.out_dir.clone().unwrap_or_else(|| {
            if options.test_hooks {
                work.join(format!("{}-test-hooks", options.flavor.name()))
            } else {
                work.join(options.flavor.name())
            }
        });
        Ok(Self {
            project,
            unikernel,
            work,
            out,
        })
    }
}

/// Flags every image part is compiled with: paths inside the binaries are
/// rewritten to fixed names, so two checkouts in different places (or two
/// users' cargo homes) give the same bytes.
fn remap_flags(paths: &Paths, toolchain: &Toolchain) -> Vec<String> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    let mut flags = vec![
        format!("--remap-path-prefix={}=/vigil", paths.project.display()),
        format!(
            "--remap-path-prefix={}=/toolchain",
            toolchain.sysroot.display()
        ),
    ];
    if let Some(cargo_home) = cargo_home {
        flags.push(format!(
            "--remap-path-prefix={}=/cargo",
            cargo_home.display()
        ));
    }
    flags
}

fn encoded_rustflags(flags: &[String]) -> OsString {
    flags.join("\x1f").into()
}

/// `git`'s idea of the checkout's revision, if git and a repository exist.
fn source_revision(project: &Path) -> Option<String> {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(project)
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let revision = git(&["rev-parse", "HEAD"])?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty {
        format!("{revision}-dirty")
    } else {
        revision
    })
}

/// `SOURCE_DATE_EPOCH` if set, else the last commit's time, else 0.
fn source_date_epoch(project: &Path) -> u64 {
    if let Some(epoch) = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return epoch;
    }
    Command::new("git")
        .arg("-C")
        .arg(project)
        .args(["log", "-1", "--format=%ct"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .unwrap_or(0)
}

/// Downloads the kernel source through cargo (registry only, checksum-pinned
/// by `unikernel/kernel/Cargo.lock`) and returns its manifest path.
fn kernel_source(paths: &Paths, toolchain: &Toolchain, quiet: bool) -> Result<PathBuf> {
    let manifest = paths.unikernel.join("kernel").join("Cargo.toml");
    let mut command = toolchain.cargo();
    command
        .args(["metadata", "--format-version", "1", "--locked"])
        .args(["--filter-platform", KERNEL_TARGET])
        .arg("--manifest-path")
        .arg(&manifest);
    if quiet {
        command.arg("--quiet");
    }
    let failure = |reason: String| BuildError::KernelSource {
        version: KERNEL_VERSION,
        reason,
    };
    let output = command
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|err| failure(format!("could not run cargo: {err}")))?;
    if !output.status.success() {
        return Err(failure(format!(
            "`{}` exited with {}",
            display_command(&command),
            output.status
        )));
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|err| failure(format!("cargo metadata printed invalid JSON: {err}")))?;
    metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "hermit-kernel" && p["version"] == KERNEL_VERSION)
        .and_then(|p| p["manifest_path"].as_str())
        .map(PathBuf::from)
        .ok_or_else(|| failure("no hermit-kernel package in cargo metadata".into()))
}

/// Directory name of the `build-time` stand-in inside the kernel copy.
const BUILD_TIME_DIR: &str = "vigil-build-time";

/// Copies the registry's kernel source into `target/vigil/kernel-src/` (once
/// per source, lockfile and patch set) and prepares it:
/// - Vigil's lockfile: the kernel's own, with `build-time` patched;
/// - Vigil's reproducible `build-time` stand-in, placed *inside* the copy
///   (cargo hashes a path dependency's location relative to the workspace
///   root only when it lies inside that root; otherwise the absolute path
///   goes into every symbol name);
/// - Vigil's kernel patches, `unikernel/kernel/patches/*.patch` in name order.
///
/// Returns the copy's manifest.
fn prepare_kernel_source(paths: &Paths, registry_manifest: &Path) -> Result<PathBuf> {
    let source = registry_manifest
        .parent()
        .ok_or_else(|| BuildError::KernelSource {
            version: KERNEL_VERSION,
            reason: format!("{} has no parent directory", registry_manifest.display()),
        })?;
    let kernel_dir = paths.unikernel.join("kernel");
    let lockfile = kernel_dir.join("hermit-kernel.Cargo.lock");
    let stand_in = kernel_dir.join("build-time");
    let stand_in_files = [Path::new("Cargo.toml"), Path::new("src/lib.rs")];
    let patches = kernel_patches(&kernel_dir.join("patches"))?;
    let copy = paths
        .work
        .join("kernel-src")
        .join(format!("hermit-kernel-{KERNEL_VERSION}"));

    let marker = copy.join(".vigil-source");
    let mut expected = format!("{}\n{}\n", source.display(), sha256_file(&lockfile)?);
    for file in stand_in_files {
        expected.push_str(&format!("{}\n", sha256_file(&stand_in.join(file))?));
    }
    for patch in &patches {
        expected.push_str(&format!("{}\n", sha256_file(patch)?));
    }
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == expected) {
        return Ok(copy.join("Cargo.toml"));
    }

    if copy.exists() {
        std::fs::remove_dir_all(&copy).map_err(BuildError::io("removing", &copy))?;
    }
    copy_tree(source, &copy)?;
    std::fs::copy(&lockfile, copy.join("Cargo.lock"))
        .map_err(BuildError::io("copying", &lockfile))?;
    for file in stand_in_files {
        let to = copy.join(BUILD_TIME_DIR).join(file);
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).map_err(BuildError::io("creating", dir))?;
        }
        std::fs::copy(stand_in.join(file), &to)
            .map_err(BuildError::io("copying", stand_in.join(file)))?;
    }
    for patch in &patches {
        apply_patch(patch, &copy)?;
    }
    std::fs::write(&marker, expected).map_err(BuildError::io("writing", &marker))?;
    Ok(copy.join("Cargo.toml"))
}

/// The `*.patch` files in `dir`, in name order (none if `dir` is missing).
fn kernel_patches(dir: &Path) -> Result<Vec<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut patches = Vec::new();
    for entry in entries {
        let path = entry.map_err(BuildError::io("reading", dir))?.path();
        if path.extension().is_some_and(|e| e == "patch") {
            patches.push(path);
        }
    }
    patches.sort();
    Ok(patches)
}

/// Applies a single-file unified diff (`--- a/<path>`, `+++ b/<path>`) to
/// the tree at `root`. It must apply exactly.
fn apply_patch(patch_file: &Path, root: &Path) -> Result<()> {
    let bad = |problem: String| BuildError::BadArtifact {
        path: patch_file.to_owned(),
        problem,
    };
    let text =
        std::fs::read_to_string(patch_file).map_err(BuildError::io("reading", patch_file))?;
    let patch =
        diffy::Patch::from_str(&text).map_err(|err| bad(format!("not a unified diff: {err}")))?;
    let target = patch
        .modified()
        .and_then(|name| name.strip_prefix("b/"))
        .filter(|name| !name.split('/').any(|part| part == ".." || part.is_empty()))
        .ok_or_else(|| bad("its `+++` line must name `b/<relative path>`".into()))?;
    let path = root.join(target);
    let original = std::fs::read_to_string(&path).map_err(BuildError::io("reading", &path))?;
    let patched = diffy::apply(&original, &patch)
        .map_err(|err| bad(format!("does not apply to {target}: {err}")))?;
    std::fs::write(&path, patched).map_err(BuildError::io("writing", &path))
}

/// Copies a directory tree of regular files.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(BuildError::io("creating", to))?;
    for entry in std::fs::read_dir(from).map_err(BuildError::io("reading", from))? {
        let entry = entry.map_err(BuildError::io("reading", from))?;
        let target = to.join(entry.file_name());
        let kind = entry
            .file_type()
            .map_err(BuildError::io("reading", entry.path()))?;
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .map_err(BuildError::io("copying", entry.path()))?;
        }
    }
    Ok(())
}

fn build_kernel(
    paths: &Paths,
    toolchain: &Toolchain,
    options: &BuildOptions,
    manifest: &Path,
    rustflags: &[String],
) -> Result<PathBuf> {
    let target_dir = paths.work.join(format!("kernel-{}", options.flavor.name()));
    let mut flags = vec!["-Zmutable-noalias=no".to_owned()];
    flags.extend_from_slice(rustflags);
    let mut command = toolchain.cargo();
    command
        .current_dir(&paths.project)
        .args(["build", "--release", "--locked", "--target", KERNEL_TARGET])
        .args([
            "-Zbuild-std=core,alloc",
            "-Zbuild-std-features=compiler-builtins-mem",
        ])
        .args(["--no-default-features", "--features"])
        .arg(options.flavor.kernel_features().join(","))
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--config")
        .arg(format!(
            "patch.crates-io.build-time.path={:?}",
            manifest.with_file_name(BUILD_TIME_DIR)
        ))
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", encoded_rustflags(&flags))
        // The kernel's build stamp (the build-time stand-in) stays at its
        // fixed default: cargo does not track environment variables that a
        // proc macro reads, so a stamp that changes with every commit would
        // make incremental builds differ from clean ones. The real date is
        // in build.json.
        .env_remove("SOURCE_DATE_EPOCH");
    if options.quiet {
        command.arg("--quiet");
    }
    run_step("building the kernel", &mut command)?;
    let archive = target_dir
        .join(KERNEL_TARGET)
        .join("release")
        .join("libhermit.a");
    expect_file(&archive)?;
    Ok(archive)
}

/// One `cargo build` in the guest workspace.
struct GuestBuild<'a> {
    /// Step name for errors.
    step: &'static str,
    /// Package, target and -Z arguments.
    args: &'a [&'a str],
    /// Its own target directory (each target and flag set gets one).
    target_dir: PathBuf,
    /// Compiler flags.
    rustflags: Vec<String>,
    /// The post-processed kernel archive's directory, for the service.
    hermit_lib_dir: Option<&'a Path>,
}

impl GuestBuild<'_> {
    fn run(&self, paths: &Paths, toolchain: &Toolchain, quiet: bool) -> Result<()> {
        let mut command = toolchain.cargo();
        command
            .current_dir(&paths.unikernel)
            .args(["build", "--release", "--locked"])
            .args(self.args)
            .arg("--manifest-path")
            .arg(paths.unikernel.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&self.target_dir)
            .env(
                "CARGO_ENCODED_RUSTFLAGS",
                encoded_rustflags(&self.rustflags),
            );
        if let Some(dir) = self.hermit_lib_dir {
            command.env("VIGIL_HERMIT_LIB_DIR", dir);
        }
        if quiet {
            command.arg("--quiet");
        }
        run_step(self.step, &mut command)
    }
}

fn expect_file(path: &Path) -> Result<()> {
    if path.is_file() {
        Ok(())
    } else {
        Err(BuildError::BadArtifact {
            path: path.to_owned(),
            problem: "the build step reported success but did not produce this file".into(),
        })
    }
}

/// Makes `lib_dir/libhermit.a` from the kernel and builtins archives, unless
/// an identical one is already there. Returns whether it was (re)made.
fn postprocess(
    toolchain: &Toolchain,
    kernel: &Path,
    builtins: &Path,
    exports_file: &Path,
    lib_dir: &Path,
) -> Result<bool> {
    let exports_text =
        std::fs::read_to_string(exports_file).map_err(BuildError::io("reading", exports_file))?;
    let stamp_value = format!(
        "{POSTPROCESS_VERSION} {} {} {}",
        sha256_file(kernel)?,
        sha256_file(builtins)?,
        hex(&Sha256::digest(exports_text.as_bytes()))
    );
    let output = lib_dir.join("libhermit.a");
    let stamp = lib_dir.join("libhermit.a.stamp");
    if output.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == stamp_value) {
        return Ok(false);
    }
    std::fs::create_dir_all(lib_dir).map_err(BuildError::io("creating", lib_dir))?;
    let objcopy = toolchain.llvm_tool("llvm-objcopy")?;
    let ar = toolchain.llvm_tool("llvm-ar")?;

    let staging = lib_dir.join("libhermit.a.partial");
    std::fs::copy(kernel, &staging).map_err(BuildError::io("copying", kernel))?;
    let kernel_keep = archive::kernel_exports(&staging)?;
    archive::retain_symbols(&objcopy, &staging, &kernel_keep, "hermit")?;

    let builtins_copy = lib_dir.join("libvigil_builtins.a");
    std::fs::copy(builtins, &builtins_copy).map_err(BuildError::io("copying", builtins))?;
    let builtins_keep: BTreeSet<String> = exports_text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect();
    let (defined, _) = archive::defined_symbols(&builtins_copy, "")?;
    if let Some(missing) = builtins_keep.iter().find(|s| !defined.contains(*s)) {
        return Err(BuildError::BadArtifact {
            path: builtins_copy,
            problem: format!(
                "does not define `{missing}`, which {} lists",
                exports_file.display()
            ),
        });
    }
    archive::retain_symbols(&objcopy, &builtins_copy, &builtins_keep, "hermit_builtins")?;
    archive::append(&ar, &staging, &builtins_copy)?;
    archive::set_osabi_standalone(&staging)?;

    std::fs::rename(&staging, &output).map_err(BuildError::io("writing", &output))?;
    std::fs::write(&stamp, stamp_value).map_err(BuildError::io("writing", &stamp))?;
    Ok(true)
}

/// Checks that `path` is a Hermit application image.
fn check_image(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).map_err(BuildError::io("reading", path))?;
    let bad = |problem: &str| BuildError::BadArtifact {
        path: path.to_owned(),
        problem: problem.to_owned(),
    };
    let file = object::File::parse(&*bytes).map_err(|_| bad("not an ELF file"))?;
    if bytes.get(7) != Some(&0xff) {
        return Err(bad(
            "ELF OSABI is not standalone (0xFF): not a Hermit image",
        ));
    }
    if file.section_by_name(".note.hermit.entry-version").is_none() {
        return Err(bad(
            "has no .note.hermit.entry-version: not linked with the Hermit kernel",
        ));
    }
    check_entropy_slot(&file).map_err(|problem| bad(&problem))
}

/// Checks that the kernel's entropy slot (kernel patch 0026a) is what the
/// loader expects, `vigil_core::v1::entropy`: one section of that name,
/// exactly [`entropy::EMPTY`] in the file, in writable memory. The kernel
/// spells the layout out itself, so this is where a drift would show.
fn check_entropy_slot(file: &object::File<'_>) -> std::result::Result<(), String> {
    use object::SectionFlags;
    use vigil_core::v1::entropy;

    let mut slots = file.sections().filter(|s| s.name() == Ok(entropy::SECTION));
    let (Some(slot), None) = (slots.next(), slots.next()) else {
        return Err(format!(
            "has no single {} section: a kernel without Vigil's patch 0026a",
            entropy::SECTION
        ));
    };
    let writable = match slot.flags() {
        SectionFlags::Elf { sh_flags } => {
            let flags = u64::from(object::elf::SHF_ALLOC | object::elf::SHF_WRITE);
            sh_flags & flags == flags
        }
        _ => false,
    };
    match slot.data() {
        Ok(bytes) if writable && bytes == entropy::EMPTY => Ok(()),
        _ => Err(format!(
            "its {} section is not an empty entropy slot in writable memory (vigil_core::v1::entropy)",
            entropy::SECTION
        )),
    }
}

/// Checks that `path` is an ELF32 x86 file with a Xen PVH entry note.
///
/// ELF32, because Debian's Xen device model is `qemu-system-i386`, whose ELF
/// loader takes `EM_386` files only (docs/xen.md); QEMU's x86-64 system
/// emulator and Xen's own PVH builder take it too.
fn check_loader(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).map_err(BuildError::io("reading", path))?;
    let file = object::File::parse(&*bytes).map_err(|_| BuildError::BadArtifact {
        path: path.to_owned(),
        problem: "not an ELF file".into(),
    })?;
    if file.format() != object::BinaryFormat::Elf
        || file.is_64()
        || file.architecture() != object::Architecture::I386
    {
        return Err(BuildError::BadArtifact {
            path: path.to_owned(),
            problem: "not an ELF32 x86 (EM_386) file, which Xen's HVM device model needs".into(),
        });
    }
    let note = file
        .section_by_name(".note.Xen")
        .and_then(|s| s.data().ok());
    // namesz 4, descsz 8, type 18 (XEN_ELFNOTE_PHYS32_ENTRY), "Xen\0".
    let expected_head = [4u32, 8, 18].map(u32::to_le_bytes).concat();
    match note {
        Some(data) if data.starts_with(&expected_head) && data[12..].starts_with(b"Xen\0") => {
            Ok(())
        }
        _ => Err(BuildError::BadArtifact {
            path: path.to_owned(),
            problem: "has no Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)".into(),
        }),
    }
}

/// Copies `from` into `dir/name` through a temporary file and a rename, so
/// the output is never half-written.
fn install(from: &Path, dir: &Path, name: &str) -> Result<Artifact> {
    let to = dir.join(name);
    let partial = dir.join(format!(".{name}.partial"));
    std::fs::copy(from, &partial).map_err(BuildError::io("writing", &partial))?;
    std::fs::rename(&partial, &to).map_err(BuildError::io("writing", &to))?;
    let bytes = std::fs::metadata(&to)
        .map_err(BuildError::io("reading", &to))?
        .len();
    Ok(Artifact {
        file: name.to_owned(),
        bytes,
        sha256: sha256_file(&to)?,
    })
}

/// Runs the whole build and writes the artifacts and `build.json`.
pub fn build(options: &BuildOptions) -> Result<(BuildInfo, PathBuf)> {
    let paths = Paths::new(options)?;
    let started = Instant::now();
    let mut progress = Progress {
        total: 7,
        current: 0,
        started,
    };
    eprintln!(
        "vigil-build: image flavor `{}` ({}){}",
        options.flavor.name(),
        options.flavor.describe(),
        if options.test_hooks {
            ", TEST IMAGE with the service's test hooks"
        } else {
            ""
        }
    );

    let channel = crate::toolchain::pinned_channel(&paths.unikernel.join("rust-toolchain.toml"))?;
    let t = progress.step(&format!(
        "toolchain {channel} with {}",
        crate::toolchain::COMPONENTS.join(", ")
    ));
    let (toolchain, installed) = Toolchain::ensure(&channel)?;
    progress.done(
        t,
        if installed {
            "installed"
        } else {
            "already installed"
        },
    );

    let rustflags = remap_flags(&paths, &toolchain);
    let epoch = source_date_epoch(&paths.project);

    let t = progress.step(&format!(
        "hermit-kernel {KERNEL_VERSION} source (crates.io, checksum-pinned)"
    ));
    let registry_manifest = kernel_source(&paths, &toolchain, options.quiet)?;
    let kernel_manifest = prepare_kernel_source(&paths, &registry_manifest)?;
    progress.done(
        t,
        &format!(
            "{}, copied to {}",
            registry_manifest
                .parent()
                .unwrap_or(&registry_manifest)
                .display(),
            kernel_manifest
                .parent()
                .unwrap_or(&kernel_manifest)
                .display()
        ),
    );

    let features = options.flavor.kernel_features();
    let t = progress.step(&format!("kernel ({})", features.join(", ")));
    let kernel_archive = build_kernel(&paths, &toolchain, options, &kernel_manifest, &rustflags)?;
    progress.done(t, "");

    let t = progress.step("kernel builtins (memory functions, libm)");
    let builtins_target = paths.work.join("builtins");
    GuestBuild {
        step: "building the builtins",
        args: &[
            "-p",
            "vigil-builtins",
            "--target",
            APP_TARGET,
            "-Zbuild-std=core",
            "-Zbuild-std-features=compiler-builtins-mem",
        ],
        target_dir: builtins_target.clone(),
        rustflags: rustflags.clone(),
        hermit_lib_dir: None,
    }
    .run(&paths, &toolchain, options.quiet)?;
    let builtins_archive = builtins_target
        .join(APP_TARGET)
        .join("release")
        .join("libvigil_builtins.a");
    expect_file(&builtins_archive)?;
    progress.done(t, "");

    let t = progress.step("kernel archive post-processing (private symbols, builtins, OSABI)");
    let lib_dir = paths.work.join(format!("lib-{}", options.flavor.name()));
    let remade = postprocess(
        &toolchain,
        &kernel_archive,
        &builtins_archive,
        &paths.unikernel.join("builtins").join("exports"),
        &lib_dir,
    )?;
    progress.done(t, if remade { "made" } else { "unchanged, cached" });

    let t = progress.step("service for x86_64-unknown-hermit, linked with the kernel");
    // A test image's service has its own target directory, so that
    // switching between the two does not rebuild either.
    let app_target = paths.work.join(if options.test_hooks {
        "app-test-hooks"
    } else {
        "app"
    });
    let mut service_args = vec![
        "-p",
        "vigil-service",
        "--bin",
        "vigil-service",
        "--target",
        APP_TARGET,
        "-Zbuild-std=std,panic_abort",
    ];
    if options.test_hooks {
        service_args.extend(["--features", "test-hooks"]);
    }
    GuestBuild {
        step: "building the service",
        args: &service_args,
        target_dir: app_target.clone(),
        rustflags: rustflags.clone(),
        hermit_lib_dir: Some(&lib_dir),
    }
    .run(&paths, &toolchain, options.quiet)?;
    let image = app_target
        .join(APP_TARGET)
        .join("release")
        .join("vigil-service");
    expect_file(&image)?;
    check_image(&image)?;
    progress.done(t, "");

    let t = progress.step("loader (PVH entry) for x86_64-unknown-none");
    let loader_target = paths.work.join("loader");
    let mut loader_flags = vec!["-Crelocation-model=static".to_owned()];
    loader_flags.extend_from_slice(&rustflags);
    GuestBuild {
        step: "building the loader",
        args: &[
            "-p",
            "vigil-loader",
            "--target",
            KERNEL_TARGET,
            "-Zbuild-std=core,alloc",
            "-Zbuild-std-features=compiler-builtins-mem",
        ],
        target_dir: loader_target.clone(),
        rustflags: loader_flags,
        hermit_lib_dir: None,
    }
    .run(&paths, &toolchain, options.quiet)?;
    let linked = loader_target
        .join(KERNEL_TARGET)
        .join("release")
        .join("vigil-loader");
    expect_file(&linked)?;
    // The same bytes in an ELF32 container: the code is 32-bit at its entry
    // and switches to long mode itself, and every address is below 4 GiB.
    let loader = loader_target.join("vigil-loader.elf32");
    let mut objcopy = Command::new(toolchain.llvm_tool("llvm-objcopy")?);
    objcopy.args(["-O", "elf32-i386"]).arg(&linked).arg(&loader);
    run_step("converting the loader to ELF32", &mut objcopy)?;
    check_loader(&loader)?;
    progress.done(t, "");

    std::fs::create_dir_all(&paths.out).map_err(BuildError::io("creating", &paths.out))?;
    let info = BuildInfo {
        schema: INFO_SCHEMA,
        flavor: options.flavor,
        test_hooks: options.test_hooks,
        nic: options.flavor.nic(),
        machine: options.flavor.machine(),
        image: install(&image, &paths.out, IMAGE_FILE)?,
        loader: install(&loader, &paths.out, LOADER_FILE)?,
        toolchain: toolchain.name.clone(),
        rustc: toolchain.rustc_version.clone(),
        kernel: KernelInfo {
            krate: "hermit-kernel",
            version: KERNEL_VERSION,
            features,
        },
        source_revision: source_revision(&paths.project),
        source_date_epoch: epoch,
    };
    let json = serde_json::to_string_pretty(&info).map_err(|err| BuildError::BadArtifact {
        path: paths.out.join(INFO_FILE),
        problem: err.to_string(),
    })? + "\n";
    let partial = paths.out.join(format!(".{INFO_FILE}.partial"));
    std::fs::write(&partial, json).map_err(BuildError::io("writing", &partial))?;
    std::fs::rename(&partial, paths.out.join(INFO_FILE))
        .map_err(BuildError::io("writing", paths.out.join(INFO_FILE)))?;

    eprintln!(
        "built {} ({} bytes, sha256 {}) and {} in {:.1} s",
        paths.out.join(IMAGE_FILE).display(),
        info.image.bytes,
        info.image.sha256,
        LOADER_FILE,
        progress.started.elapsed().as_secs_f64()
    );
    Ok((info, paths.out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATCH: &str = "--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1,2 +1,2 @@\n fn a() {}\n-fn b() {}\n+fn b() { fixed() }\n";

    fn tree(content: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/lib.rs"), content).unwrap();
        dir
    }

    fn patch_file(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("0001-test.patch");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_patch_applies_to_its_file() {
        let root = tree("fn a() {}\nfn b() {}\n");
        let patches = tempfile::tempdir().unwrap();
        apply_patch(&patch_file(patches.path(), PATCH), root.path()).unwrap();
        let text = std::fs::read_to_string(root.path().join("src/lib.rs")).unwrap();
        assert_eq!(text, "fn a() {}\nfn b() { fixed() }\n");
    }

    #[test]
    fn a_patch_that_does_not_match_stops_the_build() {
        let root = tree("fn a() {}\nfn c() {}\n");
        let patches = tempfile::tempdir().unwrap();
        let err = apply_patch(&patch_file(patches.path(), PATCH), root.path()).unwrap_err();
        assert!(
            err.to_string().contains("does not apply to src/lib.rs"),
            "{err}"
        );
    }

    #[test]
    fn a_patch_may_not_leave_the_tree() {
        let root = tree("fn a() {}\nfn b() {}\n");
        let patches = tempfile::tempdir().unwrap();
        let escaping = PATCH.replace("b/src/lib.rs", "b/../outside.rs");
        let err = apply_patch(&patch_file(patches.path(), &escaping), root.path()).unwrap_err();
        assert!(err.to_string().contains("relative path"), "{err}");
    }
}
