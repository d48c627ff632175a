//! The rule for domain names, with no other dependency: the domain's
//! directory, its Xen domain and its agent URL all use the name as it is.

/// The longest domain name.
pub const MAX_LEN: usize = 32;

/// Whether `name` is a domain name: 1 to [`MAX_LEN`] of `a-z 0-9 -`, not
/// starting with `-` (so it is a safe path component, xl name and URL
/// segment).
pub fn is_valid(name: &str) -> bool {
    (1..=MAX_LEN).contains(&name.len())
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}
