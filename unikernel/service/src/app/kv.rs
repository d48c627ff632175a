//! The key-value API's vocabulary: keys, the listing query and its page.

use serde::ser::{Serialize, SerializeStruct, Serializer};

use super::store::Store;

/// Keys listed when the query gives no `limit`.
pub const DEFAULT_LIMIT: usize = 100;

/// The largest `limit` a listing accepts.
pub const MAX_LIMIT: usize = 1000;

/// Checks a key: 1 to `max_len` bytes of `[A-Za-z0-9._~-]` (no decoding).
pub fn parse_key(bytes: &[u8], max_len: usize) -> Option<&str> {
    let valid = (1..=max_len).contains(&bytes.len())
        && bytes
            .iter()
            .all(|&byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'~' | b'-'));
    valid.then(|| std::str::from_utf8(bytes).ok()).flatten()
}

/// The query of `GET /v1/kv`: `limit=1..=1000` and `after=<key>`, each at
/// most once, in any order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListQuery<'a> {
    /// List keys after this one (exclusive).
    pub after: Option<&'a str>,
    /// List at most this many keys.
    pub limit: usize,
}

impl<'a> ListQuery<'a> {
    /// Parses a query string (without `?`); the error explains the problem.
    pub fn parse(query: &'a [u8], max_key_bytes: usize) -> Result<Self, &'static str> {
        let mut after = None;
        let mut limit = None;
        for parameter in query.split(|&byte| byte == b'&').filter(|p| !p.is_empty()) {
            let (name, value) = match parameter.iter().position(|&byte| byte == b'=') {
                Some(at) => parameter.split_at(at),
                None => return Err("query parameters must have the form name=value"),
            };
            let value = value.get(1..).unwrap_or_default();
            let slot_was_empty = match name {
                b"after" => after
                    .replace(parse_key(value, max_key_bytes).ok_or("invalid key in `after`")?)
                    .is_none(),
                b"limit" => limit.replace(parse_limit(value)?).is_none(),
                _ => return Err("unknown query parameter (expected `limit` or `after`)"),
            };
            if !slot_was_empty {
                return Err("repeated query parameter");
            }
        }
        Ok(Self {
            after,
            limit: limit.unwrap_or(DEFAULT_LIMIT),
        })
    }
}

/// A `limit` value: plain digits, 1 to [`MAX_LIMIT`].
fn parse_limit(value: &[u8]) -> Result<usize, &'static str> {
    std::str::from_utf8(value)
        .ok()
        .filter(|digits| digits.bytes().all(|byte| byte.is_ascii_digit()))
        .and_then(|digits| digits.parse().ok())
        .filter(|limit| (1..=MAX_LIMIT).contains(limit))
        .ok_or("`limit` must be a number from 1 to 1000")
}

/// One page of the key listing, serialized as
/// `{"keys":[...],"next":<last key listed if more follow, else null>}`.
#[derive(Clone, Copy, Debug)]
pub struct Page<'a> {
    store: &'a Store,
    query: ListQuery<'a>,
}

impl<'a> Page<'a> {
    /// The page `query` selects from `store`.
    pub fn new(store: &'a Store, query: ListQuery<'a>) -> Self {
        Self { store, query }
    }

    fn keys(&self) -> impl Iterator<Item = &'a str> + Clone + 'a {
        self.store
            .keys_after(self.query.after)
            .take(self.query.limit)
    }

    /// The cursor for the next page: the last key listed, if more follow.
    fn next(&self) -> Option<&'a str> {
        let mut keys = self.store.keys_after(self.query.after);
        let last = keys.by_ref().take(self.query.limit).last();
        keys.next().and(last)
    }
}

impl Serialize for Page<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        /// The key array, streamed from the store without collecting it.
        struct Keys<'p, 'a>(&'p Page<'a>);

        impl Serialize for Keys<'_, '_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(self.0.keys())
            }
        }

        let mut page = serializer.serialize_struct("Page", 2)?;
        page.serialize_field("keys", &Keys(self))?;
        page.serialize_field("next", &self.next())?;
        page.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_short_and_unreserved() {
        assert_eq!(parse_key(b"a-Z_0.9~", 8), Some("a-Z_0.9~"));
        assert_eq!(parse_key(b"abc", 3), Some("abc"));
        for bad in [
            &b""[..],
            b"abcd",
            b"a/b",
            b"a%20",
            b"a b",
            b"a+b",
            b"\xc3\xa9",
            b"a?",
        ] {
            assert_eq!(parse_key(bad, 3), None, "{bad:?}");
        }
    }

    #[test]
    fn parses_list_queries() {
        let parse = |query: &'static str| ListQuery::parse(query.as_bytes(), 8);
        assert_eq!(
            parse(""),
            Ok(ListQuery {
                after: None,
                limit: DEFAULT_LIMIT
            })
        );
        assert_eq!(
            parse("limit=5&after=k1"),
            Ok(ListQuery {
                after: Some("k1"),
                limit: 5
            })
        );
        assert_eq!(parse("after=k&limit=1000").map(|q| q.limit), Ok(1000));
        assert_eq!(parse("&limit=2&").map(|q| q.limit), Ok(2));
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=",
            "limit=-1",
            "limit=+1",
            "limit=1x",
            "limit=99999999999999999999999",
            "after=",
            "after=a/b",
            "after=toolongkey",
            "limit",
            "other=1",
            "limit=1&limit=2",
            "after=a&after=b",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    fn page_json(store: &Store, query: &str) -> String {
        let query = ListQuery::parse(query.as_bytes(), 8).unwrap();
        let mut buf = [0u8; 256];
        let len = serde_json_core::to_slice(&Page::new(store, query), &mut buf).unwrap();
        String::from_utf8(buf[..len].to_vec()).unwrap()
    }

    #[test]
    fn pages_through_the_keys() {
        let mut store = Store::new(10, 1000);
        for key in ["c", "a", "b"] {
            store.put(key, b"1").unwrap();
        }
        assert_eq!(
            page_json(&store, ""),
            r#"{"keys":["a","b","c"],"next":null}"#
        );
        assert_eq!(
            page_json(&store, "limit=2"),
            r#"{"keys":["a","b"],"next":"b"}"#
        );
        assert_eq!(
            page_json(&store, "limit=2&after=b"),
            r#"{"keys":["c"],"next":null}"#
        );
        assert_eq!(
            page_json(&store, "limit=3"),
            r#"{"keys":["a","b","c"],"next":null}"#
        );
        assert_eq!(page_json(&store, "after=c"), r#"{"keys":[],"next":null}"#);
        assert_eq!(
            page_json(&Store::new(1, 1024), ""),
            r#"{"keys":[],"next":null}"#
        );
    }
}
