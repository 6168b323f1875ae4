//! E.164 phone numbers: validation and normalisation of what people type.
//!
//! Stored and compared numbers are always canonical E.164: `+`, a country
//! calling code (first digit 1–9), then the subscriber number, 8 to 15 digits
//! in all, nothing else. [`E164::normalize`] turns common human input into
//! that form: spaces, dashes, dots and parentheses are dropped, a `00`
//! international prefix becomes `+`, and a national number is accepted only
//! when the caller states the country calling code to assume (a number
//! without one is ambiguous, so guessing would route calls to the wrong
//! country). This is not a per-country numbering-plan check: `+1 555 0100`
//! style fictional numbers pass, as they do at providers.
//!
//! Numbers are personal data: `Debug` masks all but the first two and the
//! last two digits. `Display`/[`E164::as_str`] give the full number for
//! provider requests and storage; never log them.

use std::fmt;
use std::str::FromStr;

/// Fewest digits (country code included) we accept.
pub const MIN_DIGITS: usize = 8;
/// Most digits E.164 allows (country code included).
pub const MAX_DIGITS: usize = 15;

/// A canonical E.164 number, e.g. `+14155552671`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E164(String);

/// A country calling code (1–999), the digits after `+` that pick a country
/// or region: `1` for NANP, `44` for the UK, `353` for Ireland.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallingCode(u16);

/// Why a string is not (or cannot be made into) an E.164 number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneNumberError {
    #[error("phone number is empty")]
    Empty,
    #[error(
        "phone number contains `{character}`; use digits, optionally with \
         spaces, dashes, dots or parentheses"
    )]
    InvalidCharacter { character: char },
    #[error("`+` may only appear at the start of a phone number")]
    MisplacedPlus,
    #[error(
        "phone number has no country calling code; write it in international \
         form, e.g. +14155552671"
    )]
    MissingCountryCode,
    #[error("country calling codes never start with 0")]
    ZeroCountryCode,
    #[error("phone number has {digits} digits; E.164 needs at least {MIN_DIGITS}")]
    TooShort { digits: usize },
    #[error("phone number has {digits} digits; E.164 allows at most {MAX_DIGITS}")]
    TooLong { digits: usize },
    #[error("country calling code must be 1 to 3 digits, 1–999")]
    InvalidCallingCode,
}

impl CallingCode {
    /// `code` in 1..=999.
    pub fn new(code: u16) -> Result<Self, PhoneNumberError> {
        if (1..=999).contains(&code) {
            Ok(Self(code))
        } else {
            Err(PhoneNumberError::InvalidCallingCode)
        }
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

impl FromStr for CallingCode {
    type Err = PhoneNumberError;
    /// `"44"` or `"+44"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.trim().strip_prefix('+').unwrap_or(s.trim());
        if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PhoneNumberError::InvalidCallingCode);
        }
        let code: u16 = digits
            .parse()
            .map_err(|_| PhoneNumberError::InvalidCallingCode)?;
        if digits.starts_with('0') {
            return Err(PhoneNumberError::InvalidCallingCode);
        }
        Self::new(code)
    }
}

impl fmt::Display for CallingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{}", self.0)
    }
}

impl E164 {
    /// Accepts only the canonical form (`+` and 8–15 digits, no separators).
    pub fn parse(s: &str) -> Result<Self, PhoneNumberError> {
        let digits = s.strip_prefix('+').ok_or(if s.is_empty() {
            PhoneNumberError::Empty
        } else {
            PhoneNumberError::MissingCountryCode
        })?;
        if let Some(c) = digits.chars().find(|c| !c.is_ascii_digit()) {
            return Err(if c == '+' {
                PhoneNumberError::MisplacedPlus
            } else {
                PhoneNumberError::InvalidCharacter { character: c }
            });
        }
        Self::from_international_digits(digits)
    }

    /// Normalises human input: drops separators, turns a leading `00` into
    /// `+`, and accepts a national number only with `default_country`, whose
    /// national trunk prefix (`0` in most countries, `1` in NANP, `8` in
    /// +7) is dropped. Idempotent: canonical input comes back unchanged.
    pub fn normalize(
        input: &str,
        default_country: Option<CallingCode>,
    ) -> Result<Self, PhoneNumberError> {
        let trimmed = input.trim();
        let trimmed = strip_tel_scheme(trimmed);
        let mut plus = false;
        let mut digits = String::with_capacity(trimmed.len());
        for (i, c) in trimmed.chars().enumerate() {
            match c {
                '0'..='9' => digits.push(c),
                '+' if i == 0 => plus = true,
                '+' => return Err(PhoneNumberError::MisplacedPlus),
                ' ' | '-' | '.' | '(' | ')' | '/' | '\t' => {}
                // No-break and thin spaces, hyphen/dash variants from
                // copy-pasted documents.
                '\u{a0}' | '\u{2009}' | '\u{202f}' | '\u{2010}' | '\u{2011}' | '\u{2012}'
                | '\u{2013}' | '\u{2212}' => {}
                other => return Err(PhoneNumberError::InvalidCharacter { character: other }),
            }
        }
        if digits.is_empty() {
            return Err(PhoneNumberError::Empty);
        }
        if plus {
            return Self::from_international_digits(&digits);
        }
        if let Some(rest) = digits.strip_prefix("00") {
            return Self::from_international_digits(rest);
        }
        let country = default_country.ok_or(PhoneNumberError::MissingCountryCode)?;
        let national = strip_trunk_prefix(country, &digits);
        Self::from_international_digits(&format!("{}{national}", country.get()))
    }

    fn from_international_digits(digits: &str) -> Result<Self, PhoneNumberError> {
        debug_assert!(digits.bytes().all(|b| b.is_ascii_digit()));
        if digits.is_empty() {
            return Err(PhoneNumberError::Empty);
        }
        if digits.starts_with('0') {
            return Err(PhoneNumberError::ZeroCountryCode);
        }
        let n = digits.len();
        if n < MIN_DIGITS {
            return Err(PhoneNumberError::TooShort { digits: n });
        }
        if n > MAX_DIGITS {
            return Err(PhoneNumberError::TooLong { digits: n });
        }
        Ok(Self(format!("+{digits}")))
    }

    /// The full number, `+` included (personal data: do not log).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits after `+`.
    pub fn digits(&self) -> &str {
        &self.0[1..]
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

fn strip_tel_scheme(s: &str) -> &str {
    match s.get(..4) {
        Some(p) if p.eq_ignore_ascii_case("tel:") => &s[4..],
        _ => s,
    }
}

/// Drops the trunk prefix people dial before a national number. Italy, San
/// Marino and the Vatican keep their leading 0 in international form.
fn strip_trunk_prefix(country: CallingCode, national: &str) -> &str {
    match country.get() {
        1 if national.len() == 11 => national.strip_prefix('1').unwrap_or(national),
        7 if national.len() == 11 => national.strip_prefix('8').unwrap_or(national),
        39 | 378 | 379 => national,
        _ => match national.strip_prefix('0') {
            Some(rest) if !rest.starts_with('0') => rest,
            _ => national,
        },
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.digits();
        write!(f, "E164(+{}…{})", &d[..2], &d[d.len() - 2..])
    }
}

impl FromStr for E164 {
    type Err = PhoneNumberError;
    /// Normalises without a default country (international input only).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::normalize(s, None)
    }
}

impl AsRef<str> for E164 {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for E164 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Deserialises leniently (like [`FromStr`]), so API bodies may carry
/// `"+1 (415) 555-2671"` or `"0044 20 7946 0958"`; the error says why a
/// value was refused.
impl<'de> serde::Deserialize<'de> for E164 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::normalize(&raw, None).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn cc(code: u16) -> Option<CallingCode> {
        Some(CallingCode::new(code).unwrap())
    }

    #[test]
    fn canonical_numbers_parse() {
        for ok in [
            "+14155552671",
            "+442079460958",
            "+35312345678",
            "+123456789012345",
        ] {
            assert_eq!(E164::parse(ok).unwrap().as_str(), ok);
        }
        assert_eq!(E164::parse("+12345678").unwrap().digits(), "12345678");
    }

    #[test]
    fn strict_parse_refuses_anything_else() {
        use PhoneNumberError::*;
        assert_eq!(E164::parse(""), Err(Empty));
        assert_eq!(E164::parse("14155552671"), Err(MissingCountryCode));
        assert_eq!(
            E164::parse("+1 415 555 2671"),
            Err(InvalidCharacter { character: ' ' })
        );
        assert_eq!(E164::parse("+1415+5552671"), Err(MisplacedPlus));
        assert_eq!(E164::parse("+04155552671"), Err(ZeroCountryCode));
        assert_eq!(E164::parse("+1234567"), Err(TooShort { digits: 7 }));
        assert_eq!(
            E164::parse("+1234567890123456"),
            Err(TooLong { digits: 16 })
        );
        assert_eq!(E164::parse("+"), Err(Empty));
        assert_eq!(
            E164::parse("+١٢٣٤٥٦٧٨٩"),
            Err(InvalidCharacter { character: '١' })
        );
    }

    #[test]
    fn common_inputs_normalise() {
        let cases: &[(&str, Option<CallingCode>, &str)] = &[
            ("+1 (415) 555-2671", None, "+14155552671"),
            ("  +44 20 7946 0958 ", None, "+442079460958"),
            ("0044 20 7946 0958", None, "+442079460958"),
            ("00 353-1-234-5678", None, "+35312345678"),
            ("+49.30.123456", None, "+4930123456"),
            ("tel:+1-415-555-2671", None, "+14155552671"),
            ("+1\u{a0}415\u{2013}555\u{2013}2671", None, "+14155552671"),
            // National numbers with an explicit default country.
            ("(415) 555-2671", cc(1), "+14155552671"),
            ("1 415 555 2671", cc(1), "+14155552671"),
            ("020 7946 0958", cc(44), "+442079460958"),
            ("01 234 5678", cc(353), "+35312345678"),
            ("06 1234 5678", cc(39), "+390612345678"),
            ("8 495 123 45 67", cc(7), "+74951234567"),
            // International input ignores the default country.
            ("+33 1 23 45 67 89", cc(1), "+33123456789"),
            ("0033 1 23 45 67 89", cc(44), "+33123456789"),
        ];
        for (input, country, want) in cases {
            let got = E164::normalize(input, *country).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(got.as_str(), *want, "{input:?}");
        }
    }

    #[test]
    fn bad_inputs_explain_themselves() {
        use PhoneNumberError::*;
        assert_eq!(E164::normalize("   ", None), Err(Empty));
        assert_eq!(
            E164::normalize("(415) 555-2671", None),
            Err(MissingCountryCode)
        );
        assert_eq!(
            E164::normalize("+1 415 555 2671 x12", None),
            Err(InvalidCharacter { character: 'x' })
        );
        assert_eq!(
            E164::normalize("1-800-FLOWERS", cc(1)),
            Err(InvalidCharacter { character: 'F' })
        );
        assert_eq!(E164::normalize("+1 415 +555", None), Err(MisplacedPlus));
        assert_eq!(E164::normalize("000 44 20", None), Err(ZeroCountryCode));
        assert_eq!(E164::normalize("+44 20", None), Err(TooShort { digits: 4 }));
        assert_eq!(
            E164::normalize("+44 20 7946 0958 1234 5", None),
            Err(TooLong { digits: 17 })
        );
        let msg = E164::normalize("415-555-2671", None)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("international"), "{msg}");
    }

    #[test]
    fn calling_codes() {
        assert_eq!("+44".parse::<CallingCode>().unwrap().get(), 44);
        assert_eq!("1".parse::<CallingCode>().unwrap().to_string(), "+1");
        for bad in ["", "+", "0", "044", "1000", "4a", "+-1"] {
            assert!(bad.parse::<CallingCode>().is_err(), "{bad:?}");
        }
        assert!(CallingCode::new(0).is_err());
        assert!(CallingCode::new(1000).is_err());
    }

    #[test]
    fn debug_masks_the_number_and_serde_round_trips() {
        let n = E164::parse("+14155552671").unwrap();
        let dbg = format!("{n:?}");
        assert!(!dbg.contains("4155552671") && !dbg.contains("555"), "{dbg}");
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"+14155552671\"");
        let back: E164 = serde_json::from_str("\"+1 (415) 555-2671\"").unwrap();
        assert_eq!(back, n);
        let err = serde_json::from_str::<E164>("\"555-2671\"").unwrap_err();
        assert!(err.to_string().contains("country calling code"), "{err}");
    }

    /// Property: any valid number, written with random separators and either
    /// international prefix, normalises back to itself; normalising is
    /// idempotent.
    #[test]
    fn property_formatted_numbers_normalise_back() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(164);
        let separators = [" ", "-", ".", "(", ")", "", "", "", "\u{a0}"];
        for _ in 0..20_000 {
            let len = rng.gen_range(MIN_DIGITS..=MAX_DIGITS);
            let mut digits = String::new();
            digits.push(char::from(b'1' + rng.gen_range(0..9)));
            for _ in 1..len {
                digits.push(char::from(b'0' + rng.gen_range(0..10)));
            }
            let canonical = format!("+{digits}");
            let mut typed = String::from(if rng.gen_bool(0.5) { "+" } else { "00" });
            for c in digits.chars() {
                typed.push(c);
                typed.push_str(separators[rng.gen_range(0..separators.len())]);
            }
            let n = E164::normalize(&typed, None).unwrap_or_else(|e| panic!("{typed:?}: {e}"));
            assert_eq!(n.as_str(), canonical, "{typed:?}");
            assert_eq!(E164::normalize(n.as_str(), cc(44)).unwrap(), n);
            assert_eq!(E164::parse(n.as_str()).unwrap(), n);
        }
    }

    /// Property: arbitrary input never panics, and whatever is accepted is
    /// canonical.
    #[test]
    fn property_random_input_is_rejected_or_canonical() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let alphabet: Vec<char> = "0123456789+ -().x/\u{a0}é٣t:el".chars().collect();
        for _ in 0..50_000 {
            let len = rng.gen_range(0..24);
            let s: String = (0..len)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            let country = if rng.gen_bool(0.5) {
                cc(rng.gen_range(1..=999))
            } else {
                None
            };
            if let Ok(n) = E164::normalize(&s, country) {
                let d = n.digits();
                assert!(n.as_str().starts_with('+') && !d.starts_with('0'), "{s:?}");
                assert!((MIN_DIGITS..=MAX_DIGITS).contains(&d.len()), "{s:?}");
                assert!(d.bytes().all(|b| b.is_ascii_digit()), "{s:?}");
            }
            let _ = E164::parse(&s);
        }
    }
}
