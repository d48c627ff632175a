//! Keeps the dependency direction true: binaries → libraries → the shared
//! core, never the other way, and never sideways between the builder (which
//! will hold signing keys) and the VM-host side. Reads `cargo metadata` of
//! both workspaces, so a forbidden edge fails a test instead of relying on a
//! reviewer to notice it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// Workspace packages and the Vigil packages each depends on (normal and build deps).
fn vigil_edges(manifest: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
            "--manifest-path",
        ])
        .arg(manifest)
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut edges = BTreeMap::new();
    for package in metadata["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap().to_owned();
        let deps = package["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"].as_str() != Some("dev"))
            .filter_map(|d| d["name"].as_str())
            .filter(|d| d.starts_with("vigil-"))
            .map(str::to_owned)
            .collect();
        edges.insert(name, deps);
    }
    edges
}

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn host_workspace_dependencies_point_inward() {
    let edges = vigil_edges(&root().join("Cargo.toml"));
    let allowed: BTreeMap<&str, &[&str]> = BTreeMap::from([
        ("vigil-core", &[][..]),
        // The command-line plumbing every tool shares: nothing of Vigil's.
        ("vigil-cli", &[][..]),
        // The TPM client: no Vigil format, only TPM 2.0's.
        ("vigil-tpm", &[][..]),
        ("vigil-build", &["vigil-core", "vigil-cli"][..]),
        ("vigil-dom0", &["vigil-core", "vigil-cli", "vigil-tpm"][..]),
        // The benchmarks measure sealing and launching through the libraries.
        (
            "vigil-bench",
            &[
                "vigil-core",
                "vigil-cli",
                "vigil-tpm",
                "vigil-dom0",
                "vigil-build",
                "vigil-verify",
            ][..],
        ),
        // The verifier trusts nothing it could forge: the core only.
        ("vigil-verify", &["vigil-core", "vigil-cli"][..]),
    ]);
    for (package, deps) in &edges {
        let allowed = allowed
            .get(package.as_str())
            .unwrap_or_else(|| panic!("new package {package}: add it to this test"));
        for dep in deps {
            assert!(
                allowed.contains(&dep.as_str()),
                "{package} must not depend on {dep}"
            );
        }
    }
}

#[test]
fn guest_workspace_depends_only_on_the_core() {
    let edges = vigil_edges(&root().join("unikernel").join("Cargo.toml"));
    for (package, deps) in &edges {
        for dep in deps {
            assert_eq!(dep, "vigil-core", "{package} must not depend on {dep}");
        }
    }
    // The loader reads the reference block and the key handover trailer,
    // both formats of the core.
    assert!(
        edges["vigil-loader"].iter().all(|dep| dep == "vigil-core"),
        "the loader depends on the core only"
    );
}

/// `cargo tree` of the verifier's normal build (no dev-dependencies), with
/// `extra` arguments: one line per package.
fn verifier_tree(edges: &str, extra: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-p",
            "vigil-verify",
            "-e",
            edges,
            "--prefix",
            "none",
        ])
        .args(extra)
        .arg("--manifest-path")
        .arg(root().join("Cargo.toml"))
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_verifier_links_no_signing_code() {
    // Its normal build resolves vigil-core without `report-sign` (the
    // runtime report signing key), whatever its tests enable.
    let core = verifier_tree(
        "normal,build",
        &["-i", "vigil-core", "-f", "{p} {f}", "--depth", "0"],
    );
    let features: Vec<&str> = core
        .lines()
        .next()
        .and_then(|line| line.rsplit(' ').next())
        .unwrap_or_default()
        .split(',')
        .collect();
    assert!(features.contains(&"report"), "vigil-core features: {core}");
    assert!(
        !features.contains(&"report-sign"),
        "the verifier's build enables vigil-core/report-sign: {core}"
    );
    // No manifest signing anywhere in its tree (vigil-build holds the key).
    let packages = verifier_tree("normal,build", &["-f", "{p}"]);
    for forbidden in ["vigil-build ", "vigil-dom0 ", "vigil-bench "] {
        assert!(
            !packages.lines().any(|line| line.starts_with(forbidden)),
            "{forbidden}is in the verifier's dependency tree"
        );
    }
    // The check is not vacuous: the tests (dev-dependencies) do sign.
    let with_dev = verifier_tree("all", &["-i", "vigil-core", "-f", "{f}", "--depth", "0"]);
    assert!(with_dev.contains("report-sign"), "{with_dev}");
}
