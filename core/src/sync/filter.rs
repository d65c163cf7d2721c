//! Filter rules as `Open` carries them: the client's `--include` / `--exclude` rules, in order,
//! so that the end that lists a tree (a pull's server) leaves out what they exclude, and the
//! end that receives (a push's server) keeps what they exclude from `--delete`.
//!
//! The core only carries and bounds the rules: at most [`MAX_FILTER_RULES`] rules in at most
//! [`MAX_FILTER_LEN`] bytes, checked before anything reads a rule, so a host compiles (and
//! allocates for) only a list within both bounds. What a pattern matches is the host's
//! business (`docs/FILTERS.md`); nothing here allocates.
//!
//! Encoding: the rules back to back, each its [`RuleKind`] (one byte) and its pattern
//! (postcard `str`: a varint length, then UTF-8); the whole list travels as one postcard byte
//! run (a varint length, then the rules).

use serde::{Deserialize, Serialize};

use crate::budget::{MAX_FILTER_LEN, MAX_FILTER_RULES};

/// What a rule does with the entries its pattern matches (the first rule that matches
/// decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RuleKind {
    /// `--exclude`: leave it out (and, for a directory, everything under it).
    Exclude,
    /// `--include`: keep it.
    Include,
}

/// Why a rule list was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FilterError {
    /// More rules than [`MAX_FILTER_RULES`].
    TooManyRules {
        /// The most there may be.
        max: usize,
    },
    /// The encoded list is longer than [`MAX_FILTER_LEN`] bytes (or the caller's buffer).
    TooLong {
        /// The most bytes there may be.
        max: usize,
    },
    /// A pattern is empty or holds a NUL byte.
    BadPattern,
    /// The bytes are not a list of rules (a kind byte out of range, a pattern cut short or
    /// not UTF-8).
    Malformed,
}

impl core::fmt::Display for FilterError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::TooManyRules { max } => write!(
                f,
                "more than {max} --include/--exclude rules: a network sync carries at most {max} \
                 (put the rest in .keepsyncignore files in the source tree)"
            ),
            Self::TooLong { max } => write!(
                f,
                "the --include/--exclude rules take more than {max} bytes: a network sync carries at \
                 most {max} (put the rest in .keepsyncignore files in the source tree)"
            ),
            Self::BadPattern => f.write_str("a filter pattern is empty or holds a NUL byte"),
            Self::Malformed => f.write_str("the filter rules do not decode"),
        }
    }
}

impl core::error::Error for FilterError {}

/// A checked list of filter rules, borrowed from the bytes that encode it.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct FilterRules<'a> {
    bytes: &'a [u8],
    count: u16,
}

impl<'a> FilterRules<'a> {
    /// No rules: every entry is listed, and `--delete` spares nothing because of a rule.
    pub const EMPTY: FilterRules<'static> = FilterRules { bytes: &[], count: 0 };

    /// Checks encoded rules: the length first (before any rule is read), then each rule and
    /// their count.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FilterError> {
        if bytes.len() > MAX_FILTER_LEN {
            return Err(FilterError::TooLong { max: MAX_FILTER_LEN });
        }
        let mut rest = bytes;
        let mut count = 0usize;
        while !rest.is_empty() {
            if count == MAX_FILTER_RULES {
                return Err(FilterError::TooManyRules { max: MAX_FILTER_RULES });
            }
            let ((_, pattern), tail) =
                postcard::take_from_bytes::<(RuleKind, &str)>(rest).map_err(|_| FilterError::Malformed)?;
            check_pattern(pattern)?;
            rest = tail;
            count += 1;
        }
        Ok(Self { bytes, count: count as u16 })
    }

    /// Encodes `rules`, in order, into `buf`, within the bounds a receiver checks.
    pub fn encode<'p>(
        rules: impl IntoIterator<Item = (RuleKind, &'p str)>,
        buf: &'a mut [u8],
    ) -> Result<Self, FilterError> {
        let room = buf.len().min(MAX_FILTER_LEN);
        let mut at = 0;
        let mut count = 0usize;
        for (kind, pattern) in rules {
            if count == MAX_FILTER_RULES {
                return Err(FilterError::TooManyRules { max: MAX_FILTER_RULES });
            }
            check_pattern(pattern)?;
            let n = postcard::to_slice(&(kind, pattern), &mut buf[at..room])
                .map_err(|_| FilterError::TooLong { max: room })?
                .len();
            at += n;
            count += 1;
        }
        Ok(Self { bytes: &buf[..at], count: count as u16 })
    }

    /// The rules, in order.
    pub fn iter(&self) -> impl Iterator<Item = (RuleKind, &'a str)> + use<'a> {
        let mut rest = self.bytes;
        core::iter::from_fn(move || {
            // Checked when made: every rule decodes.
            let (rule, tail) = postcard::take_from_bytes::<(RuleKind, &'a str)>(rest).ok()?;
            rest = tail;
            Some(rule)
        })
    }

    /// How many rules.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// No rules.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The encoded rules.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

fn check_pattern(pattern: &str) -> Result<(), FilterError> {
    if pattern.is_empty() || pattern.as_bytes().contains(&0) {
        return Err(FilterError::BadPattern);
    }
    Ok(())
}

impl core::fmt::Debug for FilterRules<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for FilterRules<'_> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "FilterRules({} rules, {} bytes)", self.count, self.bytes.len())
    }
}

impl Serialize for FilterRules<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.bytes)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for FilterRules<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = super::Bytes::deserialize(d)?;
        Self::parse(bytes.0).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_round_trip_in_order() {
        let mut buf = [0u8; 64];
        let rules = [(RuleKind::Include, "*.txt"), (RuleKind::Exclude, "/build/"), (RuleKind::Exclude, "é")];
        let encoded = FilterRules::encode(rules, &mut buf).unwrap();
        assert_eq!(encoded.len(), 3);
        assert_eq!(encoded.as_bytes(), b"\x01\x05*.txt\x00\x07/build/\x00\x02\xc3\xa9");
        let parsed = FilterRules::parse(encoded.as_bytes()).unwrap();
        assert!(parsed.iter().eq(rules));
        assert_eq!(FilterRules::parse(&[]).unwrap(), FilterRules::EMPTY);
    }

    #[test]
    fn the_bounds_hold_both_ways() {
        let mut buf = [0u8; MAX_FILTER_LEN + 64];
        let many = core::iter::repeat_n((RuleKind::Exclude, "x"), MAX_FILTER_RULES);
        let full = FilterRules::encode(many.clone(), &mut buf).unwrap();
        assert_eq!(full.len(), MAX_FILTER_RULES);
        let more = many.chain([(RuleKind::Exclude, "x")]);
        assert_eq!(
            FilterRules::encode(more, &mut buf),
            Err(FilterError::TooManyRules { max: MAX_FILTER_RULES })
        );
        // One rule too many, as a peer might send it.
        let mut bytes = [0u8; 3 * (MAX_FILTER_RULES + 1)];
        for rule in bytes.chunks_exact_mut(3) {
            rule.copy_from_slice(&[0, 1, b'x']);
        }
        assert_eq!(FilterRules::parse(&bytes), Err(FilterError::TooManyRules { max: MAX_FILTER_RULES }));
        // Too long is refused on its length alone, whatever the bytes.
        let long = [0xffu8; MAX_FILTER_LEN + 1];
        assert_eq!(FilterRules::parse(&long), Err(FilterError::TooLong { max: MAX_FILTER_LEN }));
        let pattern = core::str::from_utf8(&[b'a'; 5000]).unwrap();
        assert_eq!(
            FilterRules::encode([(RuleKind::Exclude, pattern); 2], &mut buf),
            Err(FilterError::TooLong { max: MAX_FILTER_LEN })
        );
    }

    #[test]
    fn broken_rules_are_refused() {
        for bad in [&[2, 1, b'x'][..], &[0, 2, b'x'], &[0, 1, 0xff], &[0, 0], &[0, 1, 0], &[0]] {
            assert!(FilterRules::parse(bad).is_err(), "{bad:?}");
        }
        let mut buf = [0u8; 16];
        assert_eq!(FilterRules::encode([(RuleKind::Include, "")], &mut buf), Err(FilterError::BadPattern));
    }
}
