//! Image flavors: which kernel features, which NIC, which machine.
//!
//! Hermit 0.11 drives one kind of NIC per build: with its `rtl8139` feature the
//! RTL8139 driver replaces virtio-net (its `get_network_driver` is compiled for
//! one or the other). The default flavor therefore uses the RTL8139, which both
//! QEMU's `pc` machine and Xen HVM emulate, so one sealed image boots on both.

use serde::{Deserialize, Serialize};

/// A kind of image `vigil-build` can make.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Flavor {
    /// RTL8139 NIC on PCI: QEMU `pc` and Xen HVM (and Xen PVH, without network).
    Hvm,
    /// virtio-net on PCI: QEMU `pc` only.
    Virtio,
    /// virtio-net over MMIO, no PCI: QEMU `microvm`.
    Microvm,
}

/// Kernel features every flavor has.
const COMMON_FEATURES: &[&str] = &["acpi", "fsgsbase", "smp", "tcp", "dhcpv4"];

impl Flavor {
    /// The name used on the command line and in directory names.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hvm => "hvm",
            Self::Virtio => "virtio",
            Self::Microvm => "microvm",
        }
    }

    /// The hermit-kernel cargo features of this flavor, in a fixed order.
    pub fn kernel_features(self) -> Vec<&'static str> {
        let mut features = COMMON_FEATURES.to_vec();
        match self {
            Self::Hvm => features.extend(["pci", "rtl8139"]),
            Self::Virtio => features.push("pci"),
            Self::Microvm => {}
        }
        features
    }

    /// The NIC model the guest drives.
    pub fn nic(self) -> &'static str {
        match self {
            Self::Hvm => "rtl8139",
            Self::Virtio => "virtio-net-pci",
            Self::Microvm => "virtio-net-device",
        }
    }

    /// The QEMU machine type the image is meant for.
    pub fn machine(self) -> &'static str {
        match self {
            Self::Hvm | Self::Virtio => "pc",
            Self::Microvm => "microvm",
        }
    }

    /// One line for progress output.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Hvm => "RTL8139 NIC: QEMU pc and Xen HVM",
            Self::Virtio => "virtio-net NIC: QEMU pc",
            Self::Microvm => "virtio-mmio NIC: QEMU microvm",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_hvm_flavor_has_rtl8139_and_microvm_has_no_pci() {
        assert!(Flavor::Hvm.kernel_features().contains(&"rtl8139"));
        assert!(!Flavor::Virtio.kernel_features().contains(&"rtl8139"));
        assert!(!Flavor::Microvm.kernel_features().contains(&"pci"));
        for flavor in [Flavor::Hvm, Flavor::Virtio, Flavor::Microvm] {
            let features = flavor.kernel_features();
            assert!(features.contains(&"tcp") && features.contains(&"dhcpv4"));
        }
    }
}
