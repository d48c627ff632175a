//! The QEMU backend: boot a loader and an image, forward a loopback port,
//! wait for the service, stop cleanly.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vigil_core::v1::config::ServiceConfig;

use crate::error::{LaunchError, Result};
use crate::health;
use crate::image::{BootImage, Flavor};
use crate::qmp::Qmp;

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";
/// The Debian package that provides it.
pub const QEMU_PACKAGE: &str = "qemu-system-x86";
/// The I/O port of QEMU's `isa-debug-exit` device, which Hermit writes its
/// exit status to on shutdown.
const DEBUG_EXIT_PORT: &str = "0xf4";

/// How the guest's CPU is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualization (`-accel kvm -cpu host`).
    Kvm,
    /// QEMU's binary translation (`-accel tcg -cpu max`).
    Tcg,
}

impl Accel {
    /// The name QEMU and humans use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }
}

/// Everything that describes one QEMU guest.
#[derive(Clone, Debug)]
pub struct QemuConfig {
    /// What to boot.
    pub image: BootImage,
    /// How to run it.
    pub accel: Accel,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// Virtual CPUs.
    pub cpus: u32,
    /// The whole kernel command line.
    pub cmdline: String,
    /// A loopback port to forward to the guest, if any.
    pub forward: Option<Forward>,
    /// Where the guest's serial console is written.
    pub console: PathBuf,
    /// Where QEMU's QMP socket is created.
    pub qmp: PathBuf,
}

/// How [`QemuConfig::spawn_with`] starts QEMU.
#[derive(Clone, Debug, Default)]
pub struct SpawnOptions {
    /// Start with the vCPUs stopped (`-S`); [`Guest::resume`] starts them.
    pub paused: bool,
    /// Write QEMU's stderr to this file, in a process group of its own, so
    /// the guest can outlive the launcher ([`Guest::detach`]). Without it,
    /// stderr is piped to the launcher for its error messages.
    pub stderr_log: Option<PathBuf>,
}

/// A TCP port on 127.0.0.1 forwarded to a guest port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forward {
    /// The host port; 0 lets QEMU pick a free one ([`Guest::open_forwarding`] tells which).
    pub host_port: u16,
    /// The guest port.
    pub guest_port: u16,
}

/// How often [`Guest::wait_healthy`] starts a probe.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// Probes [`Guest::wait_healthy`] lets run at once.
const MAX_PROBES_IN_FLIGHT: usize = 32;
/// How long a probe started after the service said it listens waits for
/// its answer (see [`Guest::wait_healthy`]).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The listen backlog the launcher gives QEMU's forwarding socket (see
/// [`Guest::open_forwarding`]).
pub const FORWARD_BACKLOG: i32 = 1024;

/// The forwarding a running guest got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forwarding {
    /// The host port (127.0.0.1) that reaches the guest.
    pub port: u16,
    /// Whether QEMU's listen backlog could be raised, and why not.
    pub backlog: std::result::Result<(), String>,
}

/// Fails if 127.0.0.1:`port` is taken, before anything boots. (QEMU binds
/// it; should another process take it in between, QEMU's failure is
/// reported as the same error.)
pub fn check_port_free(port: u16) -> Result<()> {
    match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => {
            Err(LaunchError::PortInUse { port })
        }
        Err(err) => Err(LaunchError::Io {
            action: "binding",
            path: format!("127.0.0.1:{port}").into(),
            source: err,
        }),
    }
}

/// The kernel command line that hands `config` to the service: Hermit gives
/// every word after `--` to the application.
pub fn kernel_cmdline(config: &ServiceConfig) -> String {
    config.kernel_cmdline()
}

/// The firmware of `pc` guests: qboot, from Debian's `qemu-system-data`
/// (beside SeaBIOS; QEMU finds it by name in its data directory).
pub const PC_FIRMWARE: &str = "qboot.rom";

fn os(s: impl Into<OsString>) -> OsString {
    s.into()
}

impl QemuConfig {
    /// QEMU's arguments for this guest.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let machine = match self.image.flavor {
            Flavor::Hvm | Flavor::Virtio => "pc",
            Flavor::Microvm => "microvm,ioapic2=off",
        };
        let cpu = match self.accel {
            Accel::Kvm => "host",
            // Without MONITOR/MWAIT: Hermit idles with MWAIT when CPUID
            // offers it, and TCG's MWAIT only halts a guest with one vCPU
            // (with more it is a PAUSE), so every idle vCPU would spin a
            // host core. HLT sleeps either way.
            Accel::Tcg => "max,-monitor",
        };
        args.extend(
            [
                "-machine",
                machine,
                "-accel",
                self.accel.name(),
                "-cpu",
                cpu,
            ]
            .map(os),
        );
        if matches!(self.image.flavor, Flavor::Hvm | Flavor::Virtio) {
            // qboot instead of SeaBIOS: no POST, no option ROMs; the guest
            // reaches the loader about 35 ms sooner under TCG (docs/booting.md).
            // It assigns no PCI BARs: the loader does (`vigil-loader`'s `pci`),
            // Linux does its own. `microvm` uses qboot already.
            args.extend([os("-bios"), os(PC_FIRMWARE)]);
        }
        args.extend([
            os("-smp"),
            os(self.cpus.to_string()),
            os("-m"),
            os(format!("{}M", self.memory_mib)),
        ]);
        args.extend(
            [
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
            ]
            .map(os),
        );

        let mut console = OsString::from("file,id=console,path=");
        console.push(&self.console);
        args.extend([
            os("-chardev"),
            console,
            os("-serial"),
            os("chardev:console"),
        ]);
        let mut qmp = OsString::from("unix:");
        qmp.push(&self.qmp);
        qmp.push(",server=on,wait=off");
        args.extend([os("-qmp"), qmp, os("-monitor"), os("none")]);
        args.extend([
            os("-device"),
            os(format!(
                "isa-debug-exit,iobase={DEBUG_EXIT_PORT},iosize=0x04"
            )),
        ]);

        let mut netdev = String::from("user,id=net0");
        if let Some(Forward {
            host_port,
            guest_port,
        }) = self.forward
        {
            netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host_port}-:{guest_port}"));
        }
        let nic = match self.image.flavor {
            Flavor::Hvm => "rtl8139,netdev=net0",
            Flavor::Virtio => "virtio-net-pci,netdev=net0,disable-legacy=on",
            Flavor::Microvm => "virtio-net-device,netdev=net0",
        };
        if self.image.flavor == Flavor::Microvm {
            args.extend([os("-global"), os("virtio-mmio.force-legacy=false")]);
        }
        args.extend([os("-netdev"), os(netdev), os("-device"), os(nic)]);

        args.extend([
            os("-kernel"),
            os(&self.image.loader),
            os("-initrd"),
            os(&self.image.image),
            os("-append"),
            os(&self.cmdline),
        ]);
        args
    }

    /// Starts QEMU. The returned [`Guest`] stops it when dropped.
    pub fn spawn(&self) -> Result<Guest> {
        self.spawn_with(&SpawnOptions::default())
    }

    /// Starts QEMU with `options`. The returned [`Guest`] stops it when
    /// dropped, unless [`Guest::detach`]ed.
    pub fn spawn_with(&self, options: &SpawnOptions) -> Result<Guest> {
        use std::os::unix::process::CommandExt;

        let program = which::which(QEMU).map_err(|_| LaunchError::MissingProgram {
            program: QEMU,
            package: QEMU_PACKAGE,
        })?;
        let _ = std::fs::remove_file(&self.qmp);
        let mut command = Command::new(&program);
        command.args(self.args());
        if options.paused {
            command.arg("-S");
        }
        command.stdin(Stdio::null()).stdout(Stdio::null());
        match &options.stderr_log {
            Some(path) => {
                let file = std::fs::File::create(path)
                    .map_err(LaunchError::io("creating", path.clone()))?;
                // Its own process group: Ctrl-C on the launching terminal
                // does not reach a guest meant to outlive the launcher.
                command.stderr(file).process_group(0);
            }
            None => {
                command.stderr(Stdio::piped());
            }
        }
        let child = command.spawn().map_err(|source| LaunchError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
        Ok(Guest {
            child: Some(child),
            qmp: self.qmp.clone(),
            console: self.console.clone(),
            forward: self.forward,
            spawned: Instant::now(),
            stderr_log: options.stderr_log.clone(),
        })
    }
}

/// A running QEMU. Dropping it kills QEMU, so no error path leaves one behind.
#[derive(Debug)]
pub struct Guest {
    child: Option<Child>,
    qmp: PathBuf,
    console: PathBuf,
    forward: Option<Forward>,
    /// When QEMU was started.
    spawned: Instant,
    /// Where QEMU's stderr goes, if not to a pipe.
    stderr_log: Option<PathBuf>,
}

/// QEMU's forwarding sockets to `guest_port`, from `info usernet`: their
/// file descriptor in QEMU and their host port.
pub fn host_forwards(usernet: &str, guest_port: u16) -> Vec<(i32, u16)> {
    usernet
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                [proto, fd, _src, src_port, _dst, dst_port, ..]
                    if proto.starts_with("TCP[HOST_FORWARD]")
                        && dst_port.parse() == Ok(guest_port) =>
                {
                    Some((fd.parse().ok()?, src_port.parse().ok()?))
                }
                _ => None,
            }
        })
        .collect()
}

/// Raises the listen backlog of socket `fd` of process `child` to
/// [`FORWARD_BACKLOG`], by duplicating it (`pidfd_getfd`, which needs
/// ptrace permission over the child: its parent has it unless Yama's
/// ptrace scope is 2 or more) and calling `listen` again, which Linux allows
/// on a listening socket to change its backlog.
fn widen_backlog(child: &Child, fd: i32) -> std::io::Result<()> {
    use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags, pidfd_getfd, pidfd_open};
    let pidfd = pidfd_open(Pid::from_child(child), PidfdFlags::empty())?;
    let socket = pidfd_getfd(&pidfd, fd, PidfdGetfdFlags::empty())?;
    rustix::net::listen(&socket, FORWARD_BACKLOG)?;
    Ok(())
}

/// How a guest ended, from QEMU's exit status.
pub fn describe_exit(status: ExitStatus) -> String {
    // isa-debug-exit makes QEMU exit with (value << 1) | 1; Hermit writes 1
    // on a clean shutdown and 0 on a failed one.
    match status.code() {
        Some(0) => "QEMU quit".to_owned(),
        Some(3) => "the guest shut down: its service exited with status 0".to_owned(),
        Some(1) => "the guest shut down with an error, or QEMU failed".to_owned(),
        Some(code) => format!("QEMU exited with status {code}"),
        None => format!("QEMU was killed ({status})"),
    }
}

impl Guest {
    /// Once QEMU runs: the loopback port that reaches the guest.
    ///
    /// QEMU's user networking listens on it with a backlog of one (libslirp
    /// calls `listen(s, 1)`): when many clients connect at once, the host
    /// kernel's accept queue overflows and drops their SYNs, and they stall
    /// for seconds in TCP's retransmission backoff (seen: 64 simultaneous
    /// clients, up to 30 s). So the backlog is raised to [`FORWARD_BACKLOG`]
    /// on QEMU's own socket; where Linux refuses that, [`Forwarding::backlog`]
    /// says why and the guest is served anyway.
    pub fn open_forwarding(&mut self) -> Result<Forwarding> {
        let forward = self
            .forward
            .ok_or_else(|| LaunchError::Qmp("this guest was started without forwarding".into()))?;
        let mut qmp = self.monitor(Duration::from_secs(10))?;
        let (fd, port) = host_forwards(&qmp.human("info usernet")?, forward.guest_port)
            .first()
            .copied()
            .ok_or_else(|| LaunchError::Qmp("QEMU reports no forwarding to the guest".into()))?;
        let backlog = match &self.child {
            Some(child) => widen_backlog(child, fd).map_err(|err| {
                format!(
                    "could not raise the listen backlog of QEMU's forwarding socket ({err}); \
                     many simultaneous connections may stall"
                )
            }),
            None => Err("QEMU is not running".into()),
        };
        Ok(Forwarding { port, backlog })
    }

    /// A QMP session, once QEMU has created its socket. Fails early (with
    /// QEMU's own message) if QEMU exits first.
    pub fn monitor(&mut self, timeout: Duration) -> Result<Qmp> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_exit() {
                return Err(self.exited(status));
            }
            match Qmp::connect(&self.qmp, timeout) {
                Ok(qmp) => return Ok(qmp),
                Err(err) if started.elapsed() > timeout => return Err(err),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    /// The error for QEMU having exited before the guest came up.
    fn exited(&mut self, status: ExitStatus) -> LaunchError {
        let qemu = self.stderr();
        let mut console = self.console_tail(crate::console::TAIL_LINES);
        if !qemu.is_empty() {
            console = format!("{console}\n(QEMU) {qemu}");
        }
        if let Some(forward) = self.forward {
            if qemu.contains("Could not set up host forwarding rule") {
                return LaunchError::PortInUse {
                    port: forward.host_port,
                };
            }
        }
        LaunchError::QemuExited {
            status: describe_exit(status),
            console,
        }
    }

    /// QEMU's view of the guest's user network (`info usernet`), for
    /// diagnostics; the error text if QEMU cannot be asked.
    pub fn network_state(&self) -> String {
        Qmp::connect(&self.qmp, Duration::from_secs(2))
            .and_then(|mut qmp| qmp.human("info usernet"))
            .unwrap_or_else(|err| format!("(not available: {err})"))
    }

    /// Starts the vCPUs of a guest spawned paused.
    pub fn resume(&mut self) -> Result<()> {
        let mut qmp = self.monitor(Duration::from_secs(10))?;
        qmp.execute("cont").map(|_| ())
    }

    /// Lets QEMU run on after this value is dropped; returns its pid. Its
    /// lifecycle is then the caller's (by pid and QMP socket).
    pub fn detach(mut self) -> u32 {
        self.child.take().map_or(0, crate::process::reap_when_done)
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The console log.
    pub fn console_path(&self) -> &Path {
        &self.console
    }

    /// The last `lines` lines of the guest's console.
    pub fn console_tail(&self, lines: usize) -> String {
        crate::console::tail_of(&self.console, lines)
    }

    /// QEMU's own error output, once it has exited.
    fn stderr(&mut self) -> String {
        use std::io::Read;
        if let Some(log) = &self.stderr_log {
            return std::fs::read_to_string(log)
                .unwrap_or_default()
                .trim()
                .to_owned();
        }
        let mut text = String::new();
        if let Some(stderr) = self.child.as_mut().and_then(|c| c.stderr.as_mut()) {
            let _ = stderr.read_to_string(&mut text);
        }
        text.trim().to_owned()
    }

    /// Whether QEMU has exited, and how.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits until `GET /healthz` on 127.0.0.1:`port` answers 200. Returns
    /// the time from QEMU's start to that first answer. Fails early if QEMU exits, or if
    /// `cancel` becomes true.
    ///
    /// A probe is started every [`PROBE_INTERVAL`] on a thread of its own,
    /// whether or not the earlier ones have finished. While the guest boots,
    /// QEMU accepts the connection and then waits for the guest, so a probe
    /// can only give up after its timeout; overlapping probes notice the first
    /// answer within one interval instead of one timeout.
    ///
    /// Once the console shows that the service listens
    /// ([`READY`](vigil_core::v1::console::READY)), a silent connection
    /// means a slow guest, not an absent one. From then on one probe at a
    /// time runs, and it waits up to [`ANSWER_TIMEOUT`]. Short overlapping
    /// probes against a guest slowed down (TCG on a busy host) were each
    /// given up before the answer came, while the guest still had to accept,
    /// answer and close every one of them: 200 connections a second, more
    /// than it could serve, so no probe ever saw an answer and the service
    /// filled up with abandoned connections ("256 connections in service").
    pub fn wait_healthy(
        &mut self,
        port: u16,
        timeout: Duration,
        cancel: &AtomicBool,
    ) -> Result<Duration> {
        let started = Instant::now();
        let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
        let (answered, answers) = std::sync::mpsc::channel::<Instant>();
        let in_flight = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // Probes started since the service listens (at most one at a time).
        let patient_in_flight = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut listening = false;
        loop {
            if let Ok(at) = answers.try_recv() {
                // Let the other probes finish (each is bounded by its
                // timeout), so none of them holds a connection when the
                // caller starts using the service.
                let drained = Instant::now();
                while in_flight.load(Ordering::Relaxed) > 0
                    && drained.elapsed() < ANSWER_TIMEOUT + health::PROBE_TIMEOUT
                {
                    std::thread::sleep(Duration::from_millis(2));
                }
                return Ok(at.duration_since(self.spawned));
            }
            if cancel.load(Ordering::Relaxed) {
                return Err(LaunchError::Interrupted);
            }
            if let Some(status) = self.try_exit() {
                return Err(self.exited(status));
            }
            if started.elapsed() > timeout {
                let network = self.network_state();
                return Err(LaunchError::BootTimeout {
                    seconds: timeout.as_secs(),
                    console: self.console_tail(crate::console::TAIL_LINES),
                    network,
                });
            }
            if !listening {
                listening = std::fs::read(&self.console).is_ok_and(|text| {
                    let marker = vigil_core::v1::console::READY.as_bytes();
                    text.windows(marker.len()).any(|w| w == marker)
                });
            }
            let start = if listening {
                patient_in_flight.load(Ordering::Relaxed) == 0
            } else {
                in_flight.load(Ordering::Relaxed) < MAX_PROBES_IN_FLIGHT
            };
            if start {
                let answered = answered.clone();
                let counter = std::sync::Arc::clone(&in_flight);
                let patient = listening.then(|| std::sync::Arc::clone(&patient_in_flight));
                let probe_timeout = if listening {
                    ANSWER_TIMEOUT
                } else {
                    health::PROBE_TIMEOUT
                };
                in_flight.fetch_add(1, Ordering::Relaxed);
                if let Some(patient) = &patient {
                    patient.fetch_add(1, Ordering::Relaxed);
                }
                let done = {
                    let counter = std::sync::Arc::clone(&counter);
                    let patient = patient.clone();
                    move || {
                        counter.fetch_sub(1, Ordering::Relaxed);
                        if let Some(patient) = patient {
                            patient.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                };
                let spawned = std::thread::Builder::new()
                    .name("vigil-probe".into())
                    .stack_size(64 << 10)
                    .spawn(move || {
                        if let Some(at) = health::probe_at(addr, probe_timeout) {
                            let _ = answered.send(at);
                        }
                        done();
                    });
                if spawned.is_err() {
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                    if let Some(patient) = patient {
                        patient.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            }
            std::thread::sleep(PROBE_INTERVAL);
        }
    }

    /// Waits until the console contains `marker`, QEMU exits, or the VM stops
    /// running (as KVM does on an emulation failure: it pauses the VM).
    /// Returns whether the marker appeared.
    pub fn wait_console(&mut self, marker: &str, timeout: Duration) -> bool {
        let started = Instant::now();
        let mut qmp = None;
        while started.elapsed() < timeout {
            if std::fs::read(&self.console)
                .is_ok_and(|text| text.windows(marker.len()).any(|w| w == marker.as_bytes()))
            {
                return true;
            }
            if self.try_exit().is_some() {
                return false;
            }
            if qmp.is_none() {
                qmp = Qmp::connect(&self.qmp, Duration::from_secs(1)).ok();
            }
            if let Some(session) = qmp.as_mut() {
                match session.status() {
                    Ok(status) if status == "running" => {}
                    _ => return false,
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Stops QEMU: `quit` over QMP, then a kill if it has not exited within
    /// `grace`. Returns how QEMU ended.
    pub fn stop(mut self, grace: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.try_exit() {
            self.child = None;
            return Ok(status);
        }
        if let Ok(mut qmp) = Qmp::connect(&self.qmp, grace) {
            let _ = qmp.execute("quit");
        }
        let started = Instant::now();
        while started.elapsed() < grace {
            if let Some(status) = self.try_exit() {
                self.child = None;
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut child = self
            .child
            .take()
            .ok_or_else(|| LaunchError::Qmp("no QEMU process".into()))?;
        let _ = child.kill();
        child.wait().map_err(|source| LaunchError::Spawn {
            program: QEMU.into(),
            source,
        })
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        // A detached guest has no child here: it and its socket live on.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&self.qmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(flavor: Flavor, accel: Accel) -> QemuConfig {
        QemuConfig {
            image: BootImage {
                loader: "/img/vigil-loader".into(),
                image: "/img/vigil-image".into(),
                flavor,
            },
            accel,
            memory_mib: 512,
            cpus: 1,
            cmdline: kernel_cmdline(&ServiceConfig::default()),
            forward: Some(Forward {
                host_port: 18080,
                guest_port: 8080,
            }),
            console: "/run/console.log".into(),
            qmp: "/run/qmp.sock".into(),
        }
    }

    fn joined(config: &QemuConfig) -> String {
        config
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn hvm_flavor_under_tcg() {
        let line = joined(&config(Flavor::Hvm, Accel::Tcg));
        assert!(line.starts_with(
            "-machine pc -accel tcg -cpu max,-monitor -bios qboot.rom -smp 1 -m 512M -nodefaults"
        ));
        assert!(line.contains(
            "-netdev user,id=net0,hostfwd=tcp:127.0.0.1:18080-:8080 -device rtl8139,netdev=net0"
        ));
        assert!(
            line.contains("-chardev file,id=console,path=/run/console.log -serial chardev:console")
        );
        assert!(line.contains("-qmp unix:/run/qmp.sock,server=on,wait=off -monitor none"));
        assert!(line.contains("-device isa-debug-exit,iobase=0xf4,iosize=0x04"));
        assert!(line.contains("-kernel /img/vigil-loader -initrd /img/vigil-image -append"));
    }

    #[test]
    fn forwarding_binds_loopback_only() {
        let line = joined(&config(Flavor::Hvm, Accel::Tcg));
        assert_eq!(
            line.matches("hostfwd=").count(),
            line.matches("hostfwd=tcp:127.0.0.1:").count()
        );
        let mut probe = config(Flavor::Hvm, Accel::Kvm);
        probe.forward = None;
        let line = joined(&probe);
        assert!(line.contains("-netdev user,id=net0 "));
        assert!(line.contains("-accel kvm -cpu host"));
    }

    #[test]
    fn other_flavors_pick_their_nic_and_machine() {
        let line = joined(&config(Flavor::Virtio, Accel::Tcg));
        assert!(line.contains("-device virtio-net-pci,netdev=net0,disable-legacy=on"));
        let line = joined(&config(Flavor::Microvm, Accel::Tcg));
        assert!(line.starts_with("-machine microvm,ioapic2=off"));
        assert!(!line.contains("-bios"), "microvm brings its own qboot");
        assert!(line.contains("-global virtio-mmio.force-legacy=false"));
        assert!(line.contains("-device virtio-net-device,netdev=net0"));
    }

    #[test]
    fn the_command_line_carries_the_service_config() {
        let mut service = ServiceConfig::default();
        service.set("port", "9090").unwrap();
        let line = kernel_cmdline(&service);
        assert!(line.starts_with("-- --port=9090 "));
        let words: Vec<&str> = line.split_whitespace().skip(1).collect();
        assert_eq!(ServiceConfig::from_args(words).unwrap(), service);
    }

    #[test]
    fn forward_ports_are_read_from_info_usernet() {
        let usernet = "Hub -1 (net0):
  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ
  TCP[HOST_FORWARD]   9       127.0.0.1 36169       10.0.2.15  8080     0     0
  TCP[HOST_FORWARD]   8       127.0.0.1 42477       10.0.2.15  8080     0     0
  TCP[ESTABLISHED]   12       127.0.0.1 50000       10.0.2.15  8080     0     0
  TCP[HOST_FORWARD]   7       127.0.0.1 40001       10.0.2.15  9090     0     0
";
        assert_eq!(host_forwards(usernet, 8080), [(9, 36169), (8, 42477)]);
        assert_eq!(host_forwards(usernet, 9090), [(7, 40001)]);
        assert!(host_forwards("", 8080).is_empty());
    }

    #[test]
    fn exit_statuses_are_explained() {
        use std::os::unix::process::ExitStatusExt;
        assert!(describe_exit(ExitStatus::from_raw(3 << 8)).contains("status 0"));
        assert!(describe_exit(ExitStatus::from_raw(1 << 8)).contains("error"));
        assert!(describe_exit(ExitStatus::from_raw(9)).contains("killed"));
    }
}
