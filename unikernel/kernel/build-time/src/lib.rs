//! `build_time_utc!()` and `build_time_local!()` as in `build-time` 0.1.3,
//! but the time is `SOURCE_DATE_EPOCH` (seconds since 1970, UTC; 0 if unset),
//! not the clock. Without an argument the literal is RFC 3339
//! (`1970-01-01T00:00:00+00:00`); with a format string the strftime subset
//! `%Y %m %d %H %M %S %z %:z %%` is supported, and anything else is a
//! compile error. "Local" time is UTC: a reproducible build has no time zone.

use proc_macro::{Literal, TokenStream, TokenTree};

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

struct Time {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

fn source_date() -> Result<Time, String> {
    let seconds: i64 = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(value) => value
            .trim()
            .parse()
            .map_err(|_| format!("SOURCE_DATE_EPOCH=`{value}` is not a number of seconds"))?,
        Err(_) => 0,
    };
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let in_day = seconds.rem_euclid(86_400);
    Ok(Time {
        year,
        month,
        day,
        hour: (in_day / 3600) as u32,
        minute: (in_day / 60 % 60) as u32,
        second: (in_day % 60) as u32,
    })
}

fn format(time: &Time, pattern: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&format!("{:04}", time.year)),
            Some('m') => out.push_str(&format!("{:02}", time.month)),
            Some('d') => out.push_str(&format!("{:02}", time.day)),
            Some('H') => out.push_str(&format!("{:02}", time.hour)),
            Some('M') => out.push_str(&format!("{:02}", time.minute)),
            Some('S') => out.push_str(&format!("{:02}", time.second)),
            Some('z') => out.push_str("+0000"),
            Some(':') if chars.next() == Some('z') => out.push_str("+00:00"),
            Some('%') => out.push('%'),
            other => {
                return Err(format!(
                    "unsupported format specifier `%{}` (supported: %Y %m %d %H %M %S %z %:z %%)",
                    other.map(String::from).unwrap_or_default()
                ));
            }
        }
    }
    Ok(out)
}

/// The format string of the macro call, if any.
fn pattern(input: TokenStream) -> Result<Option<String>, String> {
    let mut tokens = input.into_iter();
    let Some(token) = tokens.next() else {
        return Ok(None);
    };
    let TokenTree::Literal(literal) = token else {
        return Err("expected a string literal".into());
    };
    if tokens.next().is_some() {
        return Err("expected a single string literal".into());
    }
    let text = literal.to_string();
    let inner = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .ok_or("expected a plain string literal")?;
    if inner.contains('\\') {
        return Err("escapes are not supported in the format string".into());
    }
    Ok(Some(inner.to_owned()))
}

fn expand(input: TokenStream) -> TokenStream {
    let result = pattern(input).and_then(|pattern| {
        let time = source_date()?;
        format(&time, pattern.as_deref().unwrap_or("%Y-%m-%dT%H:%M:%S%:z"))
    });
    match result {
        Ok(text) => TokenTree::Literal(Literal::string(&text)).into(),
        Err(message) => format!("compile_error!({message:?})").parse().unwrap_or_default(),
    }
}

/// The build time (`SOURCE_DATE_EPOCH`) as a UTC string literal.
#[proc_macro]
pub fn build_time_utc(input: TokenStream) -> TokenStream {
    expand(input)
}

/// The same as [`build_time_utc!`]: reproducible builds have no local time zone.
#[proc_macro]
pub fn build_time_local(input: TokenStream) -> TokenStream {
    expand(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
        let in_day = seconds.rem_euclid(86_400);
        Time {
            year,
            month,
            day,
            hour: (in_day / 3600) as u32,
            minute: (in_day / 60 % 60) as u32,
            second: (in_day % 60) as u32,
        }
    }

    #[test]
    fn known_dates() {
        let rfc = "%Y-%m-%dT%H:%M:%S%:z";
        assert_eq!(format(&at(0), rfc).unwrap(), "1970-01-01T00:00:00+00:00");
        assert_eq!(format(&at(951_782_400), rfc).unwrap(), "2000-02-29T00:00:00+00:00");
        assert_eq!(format(&at(1_622_271_350), rfc).unwrap(), "2021-05-29T06:55:50+00:00");
        assert_eq!(format(&at(4_102_444_799), rfc).unwrap(), "2099-12-31T23:59:59+00:00");
        assert_eq!(format(&at(0), "%Y%m%d %%").unwrap(), "19700101 %");
        assert!(format(&at(0), "%a").is_err());
    }
}
