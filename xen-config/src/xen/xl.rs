//! The `xl` commands Vigil runs on a Xen dom0.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, Stdio};

use super::XenError;

/// The Debian 12 package that provides `xl` (Xen 4.17's toolstack).
pub const XL_PACKAGE: &str = "xen-utils-4.17";

/// Whether this host can create Xen domains, judged from the files under
/// `root` (`/` for this host): the hypervisor is Xen, and this is its
/// control domain (dom0) with xenfs mounted.
pub fn check_xen_host(root: &Path) -> Result<(), XenError> {
    let hypervisor = fs::read_to_string(root.join("sys/hypervisor/type")).unwrap_or_default();
    if hypervisor.trim() != "xen" {
        return Err(XenError::NotXenHost {
            reason: "it does not run under Xen (/sys/hypervisor/type is not \"xen\")".into(),
        });
    }
    let capabilities = fs::read_to_string(root.join("proc/xen/capabilities")).map_err(|_| {
        XenError::NotXenHost {
            reason: "/proc/xen/capabilities is missing: xenfs is not mounted \
                     (the xen init script of `xen-utils-4.17` mounts it)"
                .into(),
        }
    })?;
    if !capabilities.split(',').any(|c| c.trim() == "control_d") {
        return Err(XenError::NotXenHost {
            reason: "it runs under Xen but is not the control domain (dom0)".into(),
        });
    }
    Ok(())
}

/// Runs `xl create <config>`, once `xl` is installed and this host is a
/// Xen dom0; otherwise says which of the two is missing.
pub fn create(config: &Path) -> Result<(), XenError> {
    let xl = which::which("xl").map_err(|_| XenError::MissingXl {
        package: XL_PACKAGE,
    })?;
    check_xen_host(Path::new("/"))?;
    // `xl create` leaves a daemon behind that watches the domain. Its output
    // goes to an unnamed file rather than a pipe, so that nothing here waits
    // for a pipe the daemon might hold open.
    let mut log = tempfile::tempfile().map_err(XenError::io("creating", &std::env::temp_dir()))?;
    let stderr = log
        .try_clone()
        .map_err(XenError::io("creating", &std::env::temp_dir()))?;
    let status = Command::new(&xl)
        .arg("create")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .status()
        .map_err(XenError::io("running", &xl))?;
    if status.success() {
        return Ok(());
    }
    let mut said = String::new();
    let _ = log
        .seek(SeekFrom::Start(0))
        .and_then(|_| log.read_to_string(&mut said));
    Err(XenError::CreateFailed {
        config: config.to_path_buf(),
        status: status.to_string(),
        stderr: said.trim().to_owned(),
    })
}

/// Runs `xl` with `args`; its standard output if it succeeded.
fn xl_output(args: &[&str]) -> Option<String> {
    let output = Command::new("xl")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The id of the Xen domain `name`, if it exists (`xl domid`).
pub fn domid(name: &str) -> Option<u32> {
    xl_output(&["domid", name])?.trim().parse().ok()
}

/// Xen's console ring (`xl dmesg`), or nothing if `xl` fails.
pub fn dmesg() -> String {
    xl_output(&["dmesg"]).unwrap_or_default()
}

/// Destroys the Xen domain `name` (`xl destroy`), if it exists.
pub fn destroy(name: &str) {
    if domid(name).is_some() {
        let _ = xl_output(&["destroy", name]);
    }
}

/// Whether a Xen domain of this name exists (`xl domid`).
pub fn exists(name: &str) -> bool {
    domid(name).is_some()
}
