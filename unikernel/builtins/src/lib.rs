//! The C symbols that Hermit's kernel archive provides to the image.
//!
//! An application for `x86_64-unknown-hermit` gets its C-level runtime from
//! `libhermit.a`: the memory functions (`memcpy`, `memset`, ... — here from
//! `compiler_builtins`, built with its `mem` feature by `-Zbuild-std`) and the
//! C math functions that `std`'s float methods and LLVM's intrinsics call
//! (here from the `libm` crate). `vigil-build` compiles this crate for Hermit,
//! keeps exactly the symbols listed in `exports` visible, and appends it to the
//! kernel archive. On any other target the crate is empty.

#![cfg_attr(target_os = "hermit", no_std)]

#[cfg(target_os = "hermit")]
mod hermit {
    /// Defines `extern "C"` functions that forward to `libm`.
    macro_rules! export_libm {
        ($(fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
            $(
                #[unsafe(no_mangle)]
                pub extern "C" fn $name($($arg: $ty),*) -> $ret {
                    libm::$name($($arg),*)
                }
            )*
        };
    }

    // Keep in sync with `exports` (a test checks this).
    export_libm! {
        fn acos(x: f64) -> f64; fn acosf(x: f32) -> f32;
        fn asin(x: f64) -> f64; fn asinf(x: f32) -> f32;
        fn atan(x: f64) -> f64; fn atanf(x: f32) -> f32;
        fn atan2(y: f64, x: f64) -> f64; fn atan2f(y: f32, x: f32) -> f32;
        fn cbrt(x: f64) -> f64; fn cbrtf(x: f32) -> f32;
        fn ceil(x: f64) -> f64; fn ceilf(x: f32) -> f32;
        fn cos(x: f64) -> f64; fn cosf(x: f32) -> f32;
        fn cosh(x: f64) -> f64; fn coshf(x: f32) -> f32;
        fn exp(x: f64) -> f64; fn expf(x: f32) -> f32;
        fn exp2(x: f64) -> f64; fn exp2f(x: f32) -> f32;
        fn expm1(x: f64) -> f64; fn expm1f(x: f32) -> f32;
        fn fabs(x: f64) -> f64; fn fabsf(x: f32) -> f32;
        fn fdim(x: f64, y: f64) -> f64; fn fdimf(x: f32, y: f32) -> f32;
        fn floor(x: f64) -> f64; fn floorf(x: f32) -> f32;
        fn fma(x: f64, y: f64, z: f64) -> f64; fn fmaf(x: f32, y: f32, z: f32) -> f32;
        fn fmax(x: f64, y: f64) -> f64; fn fmaxf(x: f32, y: f32) -> f32;
        fn fmin(x: f64, y: f64) -> f64; fn fminf(x: f32, y: f32) -> f32;
        fn fmod(x: f64, y: f64) -> f64; fn fmodf(x: f32, y: f32) -> f32;
        fn hypot(x: f64, y: f64) -> f64; fn hypotf(x: f32, y: f32) -> f32;
        fn log(x: f64) -> f64; fn logf(x: f32) -> f32;
        fn log10(x: f64) -> f64; fn log10f(x: f32) -> f32;
        fn log1p(x: f64) -> f64; fn log1pf(x: f32) -> f32;
        fn log2(x: f64) -> f64; fn log2f(x: f32) -> f32;
        fn pow(x: f64, y: f64) -> f64; fn powf(x: f32, y: f32) -> f32;
        fn rint(x: f64) -> f64; fn rintf(x: f32) -> f32;
        fn round(x: f64) -> f64; fn roundf(x: f32) -> f32;
        fn sin(x: f64) -> f64; fn sinf(x: f32) -> f32;
        fn sinh(x: f64) -> f64; fn sinhf(x: f32) -> f32;
        fn sqrt(x: f64) -> f64; fn sqrtf(x: f32) -> f32;
        fn tan(x: f64) -> f64; fn tanf(x: f32) -> f32;
        fn tanh(x: f64) -> f64; fn tanhf(x: f32) -> f32;
        fn tgamma(x: f64) -> f64; fn tgammaf(x: f32) -> f32;
        fn trunc(x: f64) -> f64; fn truncf(x: f32) -> f32;
        fn ldexp(x: f64, n: i32) -> f64; fn ldexpf(x: f32, n: i32) -> f32;
        fn scalbn(x: f64, n: i32) -> f64; fn scalbnf(x: f32, n: i32) -> f32;
    }

    /// `lgamma_r`, which `std`'s `f64::ln_gamma` calls.
    #[unsafe(no_mangle)]
    pub extern "C" fn lgamma_r(x: f64, sign: &mut i32) -> f64 {
        let (value, s) = libm::lgamma_r(x);
        *sign = s;
        value
    }

    /// `lgammaf_r`, which `std`'s `f32::ln_gamma` calls.
    #[unsafe(no_mangle)]
    pub extern "C" fn lgammaf_r(x: f32, sign: &mut i32) -> f32 {
        let (value, s) = libm::lgammaf_r(x);
        *sign = s;
        value
    }

    /// Nothing in this crate panics on purpose; a panic here is a bug and stops the CPU.
    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
        loop {
            core::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every name in `exports` is defined by this crate or by `compiler_builtins`.
    #[test]
    fn exports_match_definitions() {
        let exports = include_str!("../exports");
        let source = include_str!("lib.rs");
        let from_compiler_builtins = ["memcpy", "memmove", "memset", "memcmp", "bcmp", "strlen"];
        for name in exports.lines().filter(|l| !l.is_empty()) {
            let defined =
                from_compiler_builtins.contains(&name) || source.contains(&format!("fn {name}("));
            assert!(defined, "`{name}` is exported but not defined");
        }
        let exported: Vec<&str> = exports.lines().collect();
        for line in source.lines() {
            for def in line.split("fn ").skip(1) {
                let Some(name) = def.split('(').next() else {
                    continue;
                };
                if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !["panic", "exports_match_definitions"].contains(&name)
                {
                    assert!(
                        exported.contains(&name),
                        "`{name}` is defined but not in exports"
                    );
                }
            }
        }
    }
}
