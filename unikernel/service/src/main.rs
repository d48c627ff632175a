//! The service binary: configuration from the command line, then the server.
//!
//! On Hermit the arguments are the words after `--` on the kernel command
//! line; `argv[0]` is a placeholder.

use std::net::TcpListener;
use std::process;

use vigil_core::v1::config::{LogLevel, ServiceConfig};
use vigil_core::v1::refblock::RefBlock;
use vigil_core::v1::report::ReportKey;
use vigil_service::app::App;
use vigil_service::app::integrity::Integrity;
use vigil_service::console_line;
use vigil_service::listen;
use vigil_service::log::Logger;
use vigil_service::protect::{self, KernelFaults, Protection};
use vigil_service::reference;
use vigil_service::server::Server;
use vigil_service::watchdog::{self, LiveMemory, Watchdog};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match ServiceConfig::from_args(args.iter().map(String::as_str)) {
        Ok(config) => config,
        Err(error) => {
            console_line!("vigil-service: invalid configuration: {error}");
            process::exit(2);
        }
    };
    // Every address of the guest under Hermit; elsewhere loopback unless
    // VIGIL_SERVICE_ADDRESS says otherwise (`vigil_service::listen`).
    let address = match listen::from_environment() {
        Ok(address) => address,
        Err(error) => {
            console_line!("vigil-service: invalid configuration: {error}");
            process::exit(2);
        }
    };
    let log = Logger::new(config.log_level);
    if log.enabled(LogLevel::Info) {
        let mut settings = String::new();
        // Writing to a String cannot fail.
        let _ = config.write_args(&mut settings);
        log.log(
            LogLevel::Info,
            format_args!(
                "version {} starting: {settings}; report key: {}",
                env!("CARGO_PKG_VERSION"),
                // Whether the loader provisioned one; the seed itself is never printed.
                if reference::report_seed().is_some() {
                    "provisioned"
                } else {
                    "none (not launched by vigil-dom0 launch)"
                },
            ),
        );
    }
    // Kept alive for the guest's whole life: dropping it stops the thread.
    let (watchdog, protection) = start_watchdog(&log);
    let key = reference::report_seed().map(|seed| ReportKey::from_seed(&seed));
    let integrity =
        Integrity::new(watchdog.as_ref().map(Watchdog::shared), key).with_protection(protection);
    let app = App::with_integrity(config, integrity);
    let server = TcpListener::bind((address, config.port))
        .and_then(|listener| Server::with_app(listener, app));
    let server = match server {
        Ok(server) => server,
        Err(error) => {
            console_line!(
                "vigil-service: cannot listen on port {}: {error}",
                config.port
            );
            process::exit(1);
        }
    };
    console_line!("{} {}", vigil_core::v1::console::READY, config.port);
    if let Err(error) = server.run() {
        console_line!("vigil-service: event loop failed: {error}");
        process::exit(1);
    }
}

/// Says whether this image was sealed and what the seal asks of it, and if
/// it was, write-protects the sealed regions and starts the watchdog.
fn start_watchdog(log: &Logger) -> (Option<Watchdog>, Protection) {
    let sealed = match reference::read() {
        Ok(RefBlock::Unsealed) => {
            log.log(
                LogLevel::Info,
                format_args!(
                    "reference block: unsealed (this image was not sealed); no watchdog, no write protection"
                ),
            );
            return (None, Protection::Off("the image is not sealed"));
        }
        Ok(RefBlock::Sealed(sealed)) => sealed,
        Err(error) => {
            // Sealing wrote the block and the image digest covers it: an
            // unreadable block means the image is not what was sealed.
            console_line!("vigil-service: reference block unreadable: {error}");
            process::exit(2);
        }
    };
    let offset = reference::load_offset(sealed.link_vaddr);
    log.log(
        LogLevel::Info,
        format_args!(
            "reference block: sealed, {} regions, reaction {} every {} ms, load offset {offset:#x}",
            sealed.regions().count(),
            sealed.reaction,
            sealed.interval_ms,
        ),
    );
    let regions: Vec<watchdog::Watched> = sealed
        .regions()
        .map(|region| watchdog::Watched {
            sealed: *region,
            address: region.vaddr.wrapping_add(offset),
        })
        .collect();
    let protection = match protect::plan(&regions, protect::image_extent(offset)) {
        Ok(spans) => protect::apply(&spans),
        Err(error) => Protection::Failed(error.to_string()),
    };
    match &protection {
        Protection::Applied {
            code_pages,
            read_only_pages,
            data_pages,
        } => log.log(
            LogLevel::Info,
            format_args!(
                "write protection: {code_pages} code pages r-x, {read_only_pages} read-only pages r--, {data_pages} other pages of the image rw- (no execute)"
            ),
        ),
        Protection::Off(reason) => log.log(
            LogLevel::Info,
            format_args!("write protection: off ({reason})"),
        ),
        Protection::Failed(reason) => {
            console_line!("vigil-service: write protection failed: {reason}; the watchdog still checks");
        }
    }
    #[cfg(feature = "test-hooks")]
    if let Some(code) = regions
        .iter()
        .find(|w| protect::access_of(w.sealed.name.as_str()) == protect::Access::ReadExecute)
    {
        console_line!(
            "vigil-service: TEST IMAGE (test-hooks): a write to protected memory follows"
        );
        protect::test_hooks::write_later(code.address + code.sealed.len / 2);
    }
    let started = Watchdog::start_with_faults(
        sealed,
        offset,
        LiveMemory,
        KernelFaults,
        *log,
        watchdog::halt_guest(),
    );
    match started {
        Ok(watchdog) => (Some(watchdog), protection),
        Err(error) => {
            console_line!("vigil-service: cannot start the watchdog: {error}");
            process::exit(1);
        }
    }
}
