use crate::DomainError;
use std::fmt;

/// A WAL position as PostgreSQL prints it (`0/16B3748`): the consistency
/// token a write answers with and a read may wait for. Only ever built from
/// checked text, so it can be bound as `$1::pg_lsn` without failing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lsn(String);

impl Lsn {
    /// Checks a token from a client; `field` names it in the error.
    pub fn parse(field: &str, text: &str) -> Result<Self, DomainError> {
        let text = text.trim();
        let valid = text.split_once('/').is_some_and(|(hi, lo)| {
            !hi.is_empty()
                && !lo.is_empty()
                && hi.len() <= 8
                && lo.len() <= 8
                && hi.chars().chain(lo.chars()).all(|c| c.is_ascii_hexdigit())
        });
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(DomainError::invalid(
                field,
                format!("{text:?} is not a WAL position such as \"0/16B3748\""),
            ))
        }
    }

    /// A position the database itself printed (`pg_current_wal_lsn()::text`).
    pub fn from_server(text: String) -> Self {
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The position as one number (`hi << 32 | lo`), so positions read from
    /// different replicas can be compared; `None` for text that is not a
    /// WAL position (only [`Self::from_server`] can hold such text).
    pub fn position(&self) -> Option<u64> {
        let (hi, lo) = self.0.split_once('/')?;
        let hi = u32::from_str_radix(hi, 16).ok()?;
        let lo = u32::from_str_radix(lo, 16).ok()?;
        Some(u64::from(hi) << 32 | u64::from(lo))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_compare_as_numbers() {
        let position = |text: &str| Lsn::parse("t", text).unwrap().position().unwrap();
        assert_eq!(position("0/16B3748"), 0x16B_3748);
        assert_eq!(position("1/0"), 1 << 32);
        // Text order would put "0/9" after "0/10".
        assert!(position("0/9") < position("0/10"));
        assert!(position("0/FFFFFFFF") < position("1/0"));
        assert_eq!(Lsn::from_server("primary".into()).position(), None);
    }

    #[test]
    fn accepts_only_wal_positions() {
        assert_eq!(
            Lsn::parse("t", " 0/16B3748 ").unwrap().as_str(),
            "0/16B3748"
        );
        assert!(Lsn::parse("t", "FFFFFFFF/FFFFFFFF").is_ok());
        for bad in [
            "",
            "0",
            "/1",
            "1/",
            "0/xyz",
            "123456789/0",
            "0/1/2",
            "0/1\0",
        ] {
            assert!(Lsn::parse("t", bad).is_err(), "{bad:?}");
        }
    }
}
