//! The Xen backend's xl.cfg: rendered from typed values, compared with the
//! golden files in `tests/data/xen/`, and read back by Xen's own config
//! parser (libxlutil, the library `xl create` parses with), which must accept
//! every generated config and return exactly the typed values.
//!
//! The parser is driven by `tests/data/xen/xlu-check.c`, compiled here with
//! `cc -lxlutil` (Debian package `libxen-dev`, from `scripts/install-deps`).
//! `VIGIL_BLESS=1 cargo test -p vigil-dom0 --test xen_config` rewrites the
//! golden files; review the diff.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use vigil_dom0::xen::{
    self, GuestKind, HvmDevices, MacAddress, XenConfig, XenError, check_xen_host, render,
};

const BOOT: &str = "/var/lib/vigil/domains/web/boot";

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/xen")
}

fn hvm() -> XenConfig {
    XenConfig {
        name: "web".into(),
        kernel: format!("{BOOT}/vigil-loader").into(),
        ramdisk: format!("{BOOT}/vigil-image").into(),
        cmdline: "-- --port=8080 --log=info".into(),
        memory_mib: 512,
        vcpus: 1,
        kind: GuestKind::Hvm(HvmDevices {
            bridge: "xenbr0".into(),
            mac: None,
            serial_log: "/var/lib/vigil/domains/web/console.log".into(),
        }),
    }
}

/// A MAC address, another bridge, and a command line with every character
/// that needs escaping in an xl.cfg string.
fn hvm_mac_escapes() -> XenConfig {
    XenConfig {
        name: "web-2".into(),
        kernel: "/srv/vigil/web-2/boot/vigil-loader".into(),
        ramdisk: "/srv/vigil/web-2/boot/vigil-image".into(),
        cmdline: r#"-- --port=9000 note="quoted \ backslash" 'single' # not a comment; x=[1]"#
            .into(),
        memory_mib: 1024,
        vcpus: 2,
        kind: GuestKind::Hvm(HvmDevices {
            bridge: "br-vigil.10".into(),
            mac: Some(MacAddress::parse("00:16:3E:12:ab:CD").unwrap()),
            serial_log: "/srv/vigil/web-2/console.log".into(),
        }),
    }
}

fn pvh() -> XenConfig {
    XenConfig {
        name: "attest-only".into(),
        kind: GuestKind::Pvh,
        memory_mib: 256,
        ..hvm()
    }
}

/// The golden cases: (file in tests/data/xen, config).
fn golden_cases() -> Vec<(&'static str, XenConfig)> {
    vec![
        ("hvm.cfg", hvm()),
        ("hvm-mac-escapes.cfg", hvm_mac_escapes()),
        ("pvh.cfg", pvh()),
    ]
}

#[test]
fn rendered_configs_match_the_golden_files() {
    let bless = std::env::var_os("VIGIL_BLESS").is_some_and(|v| v == "1");
    for (file, config) in golden_cases() {
        let rendered = render(&config).unwrap();
        let path = data_dir().join(file);
        if bless {
            std::fs::write(&path, &rendered).unwrap();
            continue;
        }
        let golden = std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        assert_eq!(
            rendered, golden,
            "{file}: the rendered config differs from the golden file \
             (if the change is intended: VIGIL_BLESS=1, then review the diff)"
        );
    }
}

// ---- Xen's own parser -------------------------------------------------------

/// `xlu-check`, built once per test run into Cargo's temporary directory.
fn xlu_check() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("xen-config");
        std::fs::create_dir_all(&dir).unwrap();
        let binary = dir.join("xlu-check");
        let staged = dir.join(format!("xlu-check.{}", std::process::id()));
        let output = Command::new("cc")
            .args(["-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", "-o"])
            .arg(&staged)
            .arg(data_dir().join("xlu-check.c"))
            .arg("-lxlutil")
            .output()
            .expect("cc runs");
        assert!(
            output.status.success(),
            "cannot build xlu-check against Xen's libxlutil: install the Debian package \
             libxen-dev (scripts/install-deps)\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::rename(&staged, &binary).unwrap();
        binary
    })
}

/// How xl reads a key (xl_parse.c): as a string, a number, or a list of
/// strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Read {
    S,
    N,
    L,
}

/// What libxlutil reads back for a key.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Value {
    Absent,
    Str(String),
    Num(i64),
    List(Vec<String>),
}

fn unhex(text: &str) -> String {
    if text == "-" {
        return String::new();
    }
    let bytes: Vec<u8> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect();
    String::from_utf8(bytes).unwrap()
}

/// Parses `text` with libxlutil and reads back `keys`. Panics if the parser
/// rejects it.
fn parse_with_libxlutil(text: &str, keys: &[(&str, Read)]) -> Vec<(String, Value)> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("domain.cfg");
    std::fs::write(&path, text).unwrap();
    let mut command = Command::new(xlu_check());
    command.arg(&path);
    for (key, read) in keys {
        let kind = match read {
            Read::S => 's',
            Read::N => 'n',
            Read::L => 'l',
        };
        command.arg(format!("{kind}:{key}"));
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "libxlutil rejected the config ({}):\n{}\n--- config ---\n{text}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let words: Vec<&str> = line.split(' ').collect();
            let value = match words[1..] {
                ["absent"] => Value::Absent,
                ["s", hex] => Value::Str(unhex(hex)),
                ["n", number] => Value::Num(number.parse().unwrap()),
                ["l", count, ref items @ ..] => {
                    assert_eq!(count.parse::<usize>().unwrap(), items.len(), "{line}");
                    Value::List(items.iter().map(|h| unhex(h)).collect())
                }
                _ => panic!("unexpected xlu-check output: {line}"),
            };
            (words[0].to_owned(), value)
        })
        .collect()
}

/// Every key the config must hold, as xl reads it, and its value.
fn expected(config: &XenConfig) -> Vec<(&'static str, Read, Value)> {
    let s = |v: &str| Value::Str(v.to_owned());
    let path = |p: &Path| Value::Str(p.to_str().unwrap().to_owned());
    let mut keys = vec![
        ("name", Read::S, s(&config.name)),
        ("kernel", Read::S, path(&config.kernel)),
        ("ramdisk", Read::S, path(&config.ramdisk)),
        ("cmdline", Read::S, s(&config.cmdline)),
        ("memory", Read::N, Value::Num(config.memory_mib.into())),
        ("vcpus", Read::N, Value::Num(config.vcpus.into())),
        ("on_poweroff", Read::S, s("destroy")),
        ("on_reboot", Read::S, s("destroy")),
        ("on_crash", Read::S, s("destroy")),
        ("tsc_mode", Read::S, s("native")),
    ];
    match &config.kind {
        GuestKind::Hvm(devices) => {
            let mut vif = format!("model=rtl8139,bridge={}", devices.bridge);
            if let Some(mac) = devices.mac {
                vif.push_str(&format!(",mac={mac}"));
            }
            keys.extend([
                ("type", Read::S, s("hvm")),
                ("device_model_version", Read::S, s("qemu-xen")),
                ("xen_platform_pci", Read::N, Value::Num(0)),
                ("vif", Read::L, Value::List(vec![vif])),
                (
                    "serial",
                    Read::S,
                    Value::Str(format!("file:{}", devices.serial_log.display())),
                ),
                ("vnc", Read::N, Value::Num(0)),
            ]);
        }
        GuestKind::Pvh => keys.push(("type", Read::S, s("pvh"))),
    }
    keys
}

/// Keys that must not be set: no vTPM, no other way to pass a command line
/// or a device, no legacy guest type.
const ABSENT: &[(&str, Read)] = &[
    ("vtpm", Read::L),
    ("extra", Read::S),
    ("root", Read::S),
    ("builder", Read::S),
    ("bootloader", Read::S),
    ("device_model_args", Read::L),
    ("device_model_args_hvm", Read::L),
    ("disk", Read::L),
];

/// The keys assigned at the start of a line (the templates put one per
/// line), each once: libxlutil would take the last of two assignments.
fn assigned_keys(text: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (key, _) = line
                .split_once(" = ")
                .unwrap_or_else(|| panic!("not `key = value`: {line:?}"));
            key.to_owned()
        })
        .for_each(|key| assert!(keys.insert(key.clone()), "{key} is assigned twice"));
    keys
}

/// Renders `config`, parses it with libxlutil, and checks that every key
/// reads back as the typed value, that the keys absent must be absent, and
/// that the file assigns no key besides the expected ones.
fn check_with_libxlutil(config: &XenConfig) {
    let text = render(config).unwrap();
    let expected = expected(config);
    let mut keys: Vec<(&str, Read)> = expected.iter().map(|(k, r, _)| (*k, *r)).collect();
    keys.extend_from_slice(ABSENT);
    let got = parse_with_libxlutil(&text, &keys);
    let mut want: Vec<(String, Value)> = expected
        .into_iter()
        .map(|(k, _, v)| (k.to_owned(), v))
        .collect();
    want.extend(ABSENT.iter().map(|(k, _)| ((*k).to_owned(), Value::Absent)));
    assert_eq!(got, want, "libxlutil read back other values from:\n{text}");
    let expected_keys: BTreeSet<String> = keys[..keys.len() - ABSENT.len()]
        .iter()
        .map(|(k, _)| (*k).to_owned())
        .collect();
    assert_eq!(assigned_keys(&text), expected_keys, "{text}");
}

#[test]
fn libxlutil_reads_back_every_golden_config() {
    for (_, config) in golden_cases() {
        check_with_libxlutil(&config);
    }
}

#[test]
fn libxlutil_reads_back_every_printable_character_and_the_longest_cmdline() {
    let printable: String = (' '..='~').collect();
    for kind in [hvm().kind, GuestKind::Pvh] {
        let mut config = XenConfig { kind, ..hvm() };
        config.cmdline = format!("-- {printable} \\\\ \\\" \\x41 \\101 \\n");
        check_with_libxlutil(&config);
        config.cmdline = printable.repeat(xen::MAX_CMDLINE_BYTES / printable.len() + 1)
            [..xen::MAX_CMDLINE_BYTES]
            .to_owned();
        check_with_libxlutil(&config);
        config.cmdline = String::new();
        check_with_libxlutil(&config);
    }
}

#[test]
fn libxlutil_reads_back_the_edges_of_every_allowed_value() {
    let allowed_path = "/a-z/ABC_xyz.09/+-._";
    let mut configs = Vec::new();
    for (memory_mib, vcpus) in [
        (*xen::MEMORY_MIB.start(), *xen::VCPUS.start()),
        (*xen::MEMORY_MIB.end(), *xen::VCPUS.end()),
    ] {
        configs.push(XenConfig {
            name: "a".repeat(32),
            kernel: format!("{allowed_path}/loader").into(),
            ramdisk: format!("{allowed_path}/image").into(),
            memory_mib,
            vcpus,
            kind: GuestKind::Hvm(HvmDevices {
                bridge: "A.b_c-0123456789".chars().take(15).collect(),
                mac: Some(MacAddress([0xfe, 0xff, 0xff, 0xff, 0xff, 0xff])),
                serial_log: format!("{allowed_path}/serial.log").into(),
            }),
            ..hvm()
        });
    }
    configs.push(XenConfig {
        name: "0-9".into(),
        kind: GuestKind::Pvh,
        ..configs[0].clone()
    });
    for config in &configs {
        check_with_libxlutil(config);
    }
}

#[test]
fn the_parser_check_itself_catches_a_broken_config() {
    let text = render(&hvm()).unwrap();
    // An unterminated string: libxlutil must reject it, and so must the test.
    let broken = text.replace("name = \"web\"", "name = \"web");
    let result = std::panic::catch_unwind(|| parse_with_libxlutil(&broken, &[("name", Read::S)]));
    assert!(result.is_err(), "an unterminated string was accepted");
    // A value that reads back differently is caught by the comparison.
    let other = text
        .replace("memory = 512", "memory = 0x200")
        .replace("vcpus = 1", "vcpus = 1\nvcpus = 2");
    let got = parse_with_libxlutil(&other, &[("memory", Read::N), ("vcpus", Read::N)]);
    assert_eq!(
        got,
        [
            ("memory".to_owned(), Value::Num(512)),
            ("vcpus".to_owned(), Value::Num(2)),
        ],
        "libxlutil reads the last assignment of a key"
    );
}

// ---- refusals: no setting can inject xl.cfg syntax ----------------------------

fn refused(config: XenConfig) -> XenError {
    match render(&config) {
        Ok(text) => panic!("rendered a config that should be refused:\n{text}"),
        Err(err) => err,
    }
}

fn with_devices(change: impl FnOnce(&mut HvmDevices)) -> XenConfig {
    let mut config = hvm();
    if let GuestKind::Hvm(devices) = &mut config.kind {
        change(devices);
    }
    config
}

#[test]
fn names_outside_the_domain_name_rule_are_refused() {
    for name in [
        "",
        "-web",
        "Web",
        "web\"\nvtpm = [\"x\"]",
        "web\"",
        "web;type=\"pv\"",
        "web#",
        "web web",
        &"a".repeat(33),
    ] {
        let err = refused(XenConfig {
            name: name.into(),
            ..hvm()
        });
        assert!(matches!(err, XenError::BadName { .. }), "{name:?}: {err}");
    }
}

#[test]
fn paths_that_could_carry_syntax_are_refused() {
    for path in [
        "relative/vigil-loader",
        "/boot/vigil\"-loader",
        "/boot/vigil'-loader",
        "/boot/vigil\\-loader",
        "/boot/vigil-loader\"\nvtpm = [\"backend=0\"]\n#",
        "/boot/vigil-loader\n",
        "/boot/vigil loader",
        "/boot/vigil,loader",
        "/boot/vigil=loader",
        "/boot/vigil#loader",
        "/boot/vigil;loader",
        "/boot/vigil@KERNEL@",
        "/boot/vigil-löader",
        "/boot/../etc/passwd",
        "/boot/./vigil-loader",
        "/boot/",
        "/boot//vigil-loader",
        "/",
    ] {
        for which in ["kernel", "ramdisk", "serial log"] {
            let config = match which {
                "kernel" => XenConfig {
                    kernel: path.into(),
                    ..hvm()
                },
                "ramdisk" => XenConfig {
                    ramdisk: path.into(),
                    ..hvm()
                },
                _ => with_devices(|d| d.serial_log = path.into()),
            };
            let err = refused(config);
            assert!(
                matches!(err, XenError::BadPath { what, .. } if what == which),
                "{which} {path:?}: {err}"
            );
        }
    }
    let too_long = format!("/{}", "a".repeat(4095));
    let err = refused(XenConfig {
        kernel: too_long.into(),
        ..hvm()
    });
    assert!(matches!(err, XenError::BadPath { .. }), "{err}");
}

#[test]
fn command_lines_with_control_or_non_ascii_characters_are_refused() {
    for cmdline in [
        "-- --port=8080\nvtpm = [\"backend=0\"]",
        "-- --port=8080\r",
        "-- --port=8080\t--log=info",
        "-- --port=8080\0",
        "-- --port=8080\x7f",
        "-- --név=1",
    ] {
        let err = refused(XenConfig {
            cmdline: cmdline.into(),
            ..hvm()
        });
        assert!(
            matches!(err, XenError::BadCmdline { .. }),
            "{cmdline:?}: {err}"
        );
    }
    let err = refused(XenConfig {
        cmdline: "x".repeat(xen::MAX_CMDLINE_BYTES + 1),
        ..hvm()
    });
    assert!(matches!(err, XenError::BadCmdline { .. }), "{err}");
}

#[test]
fn numbers_out_of_range_are_refused() {
    for (memory_mib, vcpus) in [
        (0, 1),
        (xen::MEMORY_MIB.start() - 1, 1),
        (xen::MEMORY_MIB.end() + 1, 1),
        (512, 0),
        (512, xen::VCPUS.end() + 1),
    ] {
        let err = refused(XenConfig {
            memory_mib,
            vcpus,
            ..hvm()
        });
        assert!(matches!(err, XenError::OutOfRange { .. }), "{err}");
    }
}

#[test]
fn bridges_and_macs_that_would_change_the_vif_are_refused() {
    for bridge in [
        "",
        "xenbr0,type=vif",
        "xenbr0,script=/tmp/x",
        "br=0",
        "xen br0",
        "xenbr0\"",
        "xenbr0/1",
        ".",
        "..",
        "a-very-long-bridge",
    ] {
        let err = refused(with_devices(|d| d.bridge = bridge.into()));
        assert!(
            matches!(err, XenError::BadBridge { .. }),
            "{bridge:?}: {err}"
        );
    }
    for mac in [[0x01, 0, 0, 0, 0, 1], [0xff; 6], [0; 6]] {
        let err = refused(with_devices(|d| d.mac = Some(MacAddress(mac))));
        assert!(matches!(err, XenError::BadMac { .. }), "{mac:?}: {err}");
    }
    for text in [
        "",
        "00:16:3e:12:34",
        "00:16:3e:12:34:56:78",
        "00-16-3e-12-34-56",
        "0:16:3e:12:34:56",
        "00:16:3e:12:34:5g",
        "00:16:3e:12:34:+5",
    ] {
        assert!(MacAddress::parse(text).is_err(), "{text:?}");
    }
    assert_eq!(
        MacAddress::parse("00:16:3E:12:ab:CD").unwrap().to_string(),
        "00:16:3e:12:ab:cd"
    );
}

// ---- xl create ----------------------------------------------------------------

#[test]
fn only_a_xen_dom0_may_create_domains() {
    let root = tempfile::tempdir().unwrap();
    let not_xen = check_xen_host(root.path()).unwrap_err();
    assert!(
        matches!(&not_xen, XenError::NotXenHost { reason } if reason.contains("does not run under Xen")),
        "{not_xen}"
    );
    std::fs::create_dir_all(root.path().join("sys/hypervisor")).unwrap();
    std::fs::write(root.path().join("sys/hypervisor/type"), "xen\n").unwrap();
    let no_xenfs = check_xen_host(root.path()).unwrap_err();
    assert!(no_xenfs.to_string().contains("xenfs"), "{no_xenfs}");
    std::fs::create_dir_all(root.path().join("proc/xen")).unwrap();
    std::fs::write(root.path().join("proc/xen/capabilities"), "").unwrap();
    let domu = check_xen_host(root.path()).unwrap_err();
    assert!(domu.to_string().contains("dom0"), "{domu}");
    std::fs::write(root.path().join("proc/xen/capabilities"), "control_d\n").unwrap();
    check_xen_host(root.path()).unwrap();
}

#[test]
fn create_names_the_package_or_the_missing_hypervisor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.cfg");
    xen::write(&hvm(), &path).unwrap();
    let written = std::fs::read_to_string(&path).unwrap();
    assert_eq!(written, render(&hvm()).unwrap());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let err = xen::create(&path).unwrap_err();
    if which::which("xl").is_err() {
        assert!(matches!(err, XenError::MissingXl { .. }), "{err}");
        assert!(err.to_string().contains("xen-utils-4.17"), "{err}");
    } else if check_xen_host(Path::new("/")).is_err() {
        assert!(matches!(err, XenError::NotXenHost { .. }), "{err}");
    } else {
        // A real dom0: the domain is created only when its files exist; here
        // they do not, so xl itself refuses.
        assert!(matches!(err, XenError::CreateFailed { .. }), "{err}");
    }
}
