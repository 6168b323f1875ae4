//! Optional PII redaction of final transcript text (a tenant setting decides
//! whether it runs).
//!
//! Whisper writes the same number three ways ("4111 1111…", "4111-1111…",
//! "four one one one…"), so detection works on tokens rather than on the raw
//! string: words, digit runs and single symbols, with the whitespace between
//! them. Digit words (zero/oh/one…nine, from `words/numbers.txt`; "double
//! five") and written digits are merged into *runs* joined by the separators
//! people and Whisper use in numbers (space, `-`, `.`, `,`, parentheses);
//! each run is then classified:
//!
//! - a card is 13–19 digits that pass the Luhn check (the check keeps random
//!   long numbers and phone numbers out);
//! - an SSN is a whole run of 9 digits grouped 3-2-4;
//! - a phone number is a whole run of 10–15 digits (8–15 after `+`), or, in
//!   a longer run, a North American `(555) 123-4567`-shaped group.
//!
//! Amounts (`$25`, `1,250`), percentages, times (`10:30`), identifiers glued
//! to letters (`A12345`, `10am`) and lists of years never join a run, so
//! ordinary numbers survive. E-mail addresses are found around `@` or a
//! spoken "at" followed by a domain with a "dot"/`.` and a known TLD.
//!
//! Left alone on purpose: 7-digit local numbers ("555-0199", too close to
//! order numbers); 13–19 digit numbers that fail Luhn (so tracking numbers
//! survive, at the cost of a card with one mis-heard digit); a bare 9-digit
//! number (an SSN needs the 3-2-4 grouping); and the words of a spoken local
//! part said with spaces ("john smith at…" keeps "john": any earlier word
//! could be the start of it).
//!
//! Pure and deterministic; linear in the input (every inner search is
//! bounded), and it never panics on any UTF-8 input.

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use crate::transcript::words;

/// What a redacted span was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiKind {
    Card,
    Phone,
    Email,
    Ssn,
}

impl PiiKind {
    /// The text that replaces a span of this kind.
    pub fn placeholder(self) -> &'static str {
        match self {
            PiiKind::Card => "[CARD]",
            PiiKind::Phone => "[PHONE]",
            PiiKind::Email => "[EMAIL]",
            PiiKind::Ssn => "[SSN]",
        }
    }
}

/// Redacted text and what was taken out of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redacted {
    pub text: String,
    /// One entry per replaced span, in text order (so counts are available
    /// for audit without keeping the PII itself).
    pub kinds: Vec<PiiKind>,
}

/// Redaction for tentative (partial) text: [`redact`], then any remaining
/// run of three or more digits (with the separators numbers are written
/// with) becomes `[NUMBER]`. A partial often holds half a card or phone
/// number, which no rule can recognise yet; it is shown for a second and
/// then replaced, so hiding every longer number is the safe trade.
pub fn redact_tentative(text: &str) -> String {
    let redacted = redact(text).text;
    let mut out = String::with_capacity(redacted.len());
    let chars: Vec<char> = redacted.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        // The run: digits joined by single separators.
        let (start, mut end, mut digits) = (i, i, 0);
        let mut j = i;
        while j < chars.len() {
            if chars[j].is_ascii_digit() {
                digits += 1;
                j += 1;
                end = j;
            } else if matches!(chars[j], ' ' | '-' | '.' | ',' | '(' | ')')
                && chars.get(j + 1).is_some_and(|c| c.is_ascii_digit())
            {
                j += 1;
            } else {
                break;
            }
        }
        if digits >= 3 {
            out.push_str("[NUMBER]");
        } else {
            out.extend(&chars[start..end]);
        }
        i = end;
    }
    out
}

/// Replaces card numbers, phone numbers, e-mail addresses and SSNs in `text`
/// with `[CARD]`, `[PHONE]`, `[EMAIL]` and `[SSN]`.
pub fn redact(text: &str) -> Redacted {
    let mut scanner = Scanner::new(text);
    let mut spans = scanner.emails();
    spans.extend(scanner.numbers());
    spans.sort_by_key(|&(start, _, _)| start);

    let mut out = String::with_capacity(text.len());
    let mut kinds = Vec::with_capacity(spans.len());
    let mut pos = 0;
    for (start, end, kind) in spans {
        // Spans never overlap (tokens are claimed once); guard anyway.
        if start < pos {
            continue;
        }
        out.push_str(&text[pos..start]);
        out.push_str(kind.placeholder());
        kinds.push(kind);
        pos = end;
    }
    out.push_str(&text[pos..]);
    Redacted { text: out, kinds }
}

/// Longest gap (bytes) between two parts of one number: "5 - 1" at most.
const MAX_GAP: usize = 6;
/// Bound on every backwards/forwards walk, so no input is quadratic.
const MAX_WALK: usize = 64;
/// Symbols allowed between the groups of a number.
const NUMBER_SEPS: &[char] = &['-', '.', ',', '(', ')'];
const CURRENCY: &[char] = &['$', '€', '£', '¥', '₹', '¢'];
/// Symbols that may join the parts of an e-mail's local part ("john.smith").
const LOCAL_SYMS: &[char] = &['.', '_', '-', '+', '%'];
/// Words that join the parts of a spoken local part.
static SPOKEN_JOINERS: LazyLock<Vec<&str>> =
    LazyLock::new(|| words::list(include_str!("words/spoken_joiners.txt")).collect());
/// TLDs accepted after a *spoken* "at".
static SPOKEN_TLDS: LazyLock<Vec<&str>> =
    LazyLock::new(|| words::list(include_str!("words/spoken_tlds.txt")).collect());
/// Single words before a spoken "at" that are ordinary speech.
static NOT_LOCAL: LazyLock<Vec<&str>> =
    LazyLock::new(|| words::list(include_str!("words/not_local.txt")).collect());

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Word,
    Num,
    Sym(char),
}

/// A word (letters), a run of ASCII digits, or one other non-space char.
#[derive(Debug, Clone, Copy)]
struct Tok {
    kind: Kind,
    start: usize,
    end: usize,
}

fn tokenize(text: &str) -> Vec<Tok> {
    let mut toks: Vec<Tok> = Vec::new();
    for (i, c) in text.char_indices() {
        let end = i + c.len_utf8();
        let kind = if c.is_whitespace() {
            continue;
        } else if c.is_ascii_digit() {
            Kind::Num
        } else if c.is_alphabetic() {
            Kind::Word
        } else {
            Kind::Sym(c)
        };
        match toks.last_mut() {
            Some(last) if last.end == i && last.kind == kind && !matches!(kind, Kind::Sym(_)) => {
                last.end = end;
            }
            _ => toks.push(Tok {
                kind,
                start: i,
                end,
            }),
        }
    }
    toks
}

/// One part of a number: written digits ("4111", with a glued `(`/`)` or a
/// leading `+`) or a digit word ("four", "double five").
#[derive(Debug, Clone)]
struct Item {
    start: usize,
    end: usize,
    digits: Vec<u8>,
    written: bool,
    /// "oh"/"o": a digit only next to other digit words.
    oh: bool,
    /// Preceded by `+` or "plus": an international number starts here.
    plus: bool,
    /// An amount, a time, an identifier: never part of PII.
    blocked: bool,
    /// 1900–2099 written as four digits.
    year: bool,
}

struct Scanner<'a> {
    text: &'a str,
    toks: Vec<Tok>,
    /// Tokens already inside a redacted span.
    taken: Vec<bool>,
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Self {
        let toks = tokenize(text);
        let taken = vec![false; toks.len()];
        Self { text, toks, taken }
    }

    fn s(&self, i: usize) -> &'a str {
        &self.text[self.toks[i].start..self.toks[i].end]
    }

    fn kind(&self, i: usize) -> Option<Kind> {
        self.toks.get(i).map(|t| t.kind)
    }

    fn sym(&self, i: usize) -> Option<char> {
        match self.kind(i) {
            Some(Kind::Sym(c)) => Some(c),
            _ => None,
        }
    }

    fn alnum(&self, i: usize) -> bool {
        matches!(self.kind(i), Some(Kind::Word | Kind::Num))
    }

    fn word_is(&self, i: usize, w: &str) -> bool {
        self.kind(i) == Some(Kind::Word) && self.s(i).eq_ignore_ascii_case(w)
    }

    fn word_in(&self, i: usize, words: &[&str]) -> bool {
        self.kind(i) == Some(Kind::Word) && words.iter().any(|w| self.s(i).eq_ignore_ascii_case(w))
    }

    /// No whitespace between tokens `a` and `b` (`b` = `a + 1`).
    fn glued(&self, a: usize, b: usize) -> bool {
        match (self.toks.get(a), self.toks.get(b)) {
            (Some(x), Some(y)) => x.end == y.start,
            _ => false,
        }
    }

    fn free(&self, i: usize) -> bool {
        i < self.toks.len() && !self.taken[i]
    }

    fn claim(&mut self, from: usize, to: usize) {
        for t in &mut self.taken[from..to] {
            *t = true;
        }
    }

    // ---- e-mail -------------------------------------------------------

    fn emails(&mut self) -> Vec<(usize, usize, PiiKind)> {
        let mut spans = Vec::new();
        let mut i = 1;
        while i < self.toks.len() {
            let at = self.sym(i) == Some('@') || self.word_is(i, "at");
            if at && self.free(i) {
                if let Some((from, to)) = self.email_around(i) {
                    spans.push((self.toks[from].start, self.toks[to - 1].end, PiiKind::Email));
                    self.claim(from, to);
                    i = to;
                    continue;
                }
            }
            i += 1;
        }
        spans
    }

    /// Glued `alnum(-alnum)*` starting at `j`; its end (exclusive).
    fn label_fwd(&self, j: usize) -> Option<usize> {
        if !self.alnum(j) || !self.free(j) {
            return None;
        }
        let mut k = j + 1;
        for _ in 0..MAX_WALK {
            if !self.glued(k - 1, k) {
                break;
            }
            if self.alnum(k) {
                k += 1;
            } else if self.sym(k) == Some('-') && self.glued(k, k + 1) && self.alnum(k + 1) {
                k += 2;
            } else {
                break;
            }
        }
        Some(k)
    }

    /// Glued local-part chars ending at `k`; the first token's index.
    fn local_back(&self, k: usize) -> Option<usize> {
        if !self.alnum(k) || !self.free(k) {
            return None;
        }
        let mut start = k;
        for _ in 0..MAX_WALK {
            if start == 0 || !self.glued(start - 1, start) || !self.free(start - 1) {
                break;
            }
            let p = start - 1;
            if self.alnum(p) {
                start = p;
            } else if self.sym(p).is_some_and(|c| LOCAL_SYMS.contains(&c))
                && p > 0
                && self.glued(p - 1, p)
                && self.alnum(p - 1)
                && self.free(p - 1)
            {
                start = p - 1;
            } else {
                break;
            }
        }
        Some(start)
    }

    /// The e-mail whose at-sign is token `i`, as a token range.
    fn email_around(&self, i: usize) -> Option<(usize, usize)> {
        let spoken = self.kind(i) == Some(Kind::Word);
        // Domain: label (dot label)+, ending on the last label that is a TLD.
        let mut k = self.label_fwd(i + 1)?;
        let mut end = None;
        for _ in 0..MAX_WALK {
            // "dot", or a '.' inside the address ("example.com", not "home. Com").
            let dot = self.word_is(k, "dot")
                || (self.sym(k) == Some('.') && self.glued(k - 1, k) && self.glued(k, k + 1));
            if !dot {
                break;
            }
            let next = k + 1;
            let Some(label_end) = self.label_fwd(next) else {
                break;
            };
            let label = &self.text[self.toks[next].start..self.toks[label_end - 1].end];
            let tld_ok = if spoken {
                SPOKEN_TLDS.iter().any(|t| label.eq_ignore_ascii_case(t))
            } else {
                (2..=24).contains(&label.len()) && label.chars().all(|c| c.is_ascii_alphabetic())
            };
            if tld_ok {
                end = Some(label_end);
            }
            k = label_end;
        }
        let end = end?;

        // Local part: glued chars, chained by spoken joiners or spelled
        // letters ("j o h n at …").
        let mut start = self.local_back(i - 1)?;
        let mut parts = 1;
        for _ in 0..MAX_WALK {
            if start >= 2
                && self.word_in(start - 1, &SPOKEN_JOINERS)
                && self.free(start - 1)
                && self.alnum(start - 2)
            {
                match self.local_back(start - 2) {
                    Some(s) => start = s,
                    None => break,
                }
            } else if start >= 1
                && self.alnum(start - 1)
                && self.free(start - 1)
                && self.s(start).chars().count() == 1
                && self.s(start - 1).chars().count() == 1
                && !(start >= 2 && self.glued(start - 2, start - 1))
            {
                start -= 1;
            } else {
                break;
            }
            parts += 1;
        }
        if spoken && parts == 1 && start == i - 1 {
            let w = self.s(start);
            if w.chars().count() == 1 || NOT_LOCAL.iter().any(|n| w.eq_ignore_ascii_case(n)) {
                return None;
            }
        }
        Some((start, end))
    }

    // ---- numbers ------------------------------------------------------

    fn numbers(&mut self) -> Vec<(usize, usize, PiiKind)> {
        let mut spans = Vec::new();
        let mut run: Vec<Item> = Vec::new();
        let mut i = 0;
        while i < self.toks.len() {
            if self.taken[i] {
                self.classify_run(&mut run, &mut spans);
                i += 1;
                continue;
            }
            match self.item_at(i) {
                Some((item, next)) => {
                    if item.blocked {
                        self.classify_run(&mut run, &mut spans);
                    } else {
                        if let Some(prev) = run.last() {
                            if !self.connected(prev, &item) {
                                self.classify_run(&mut run, &mut spans);
                            }
                        }
                        run.push(item);
                    }
                    i = next;
                }
                None => {
                    // Separators are checked as gaps by `connected`.
                    if !self.sym(i).is_some_and(|c| NUMBER_SEPS.contains(&c)) {
                        self.classify_run(&mut run, &mut spans);
                    }
                    i += 1;
                }
            }
        }
        self.classify_run(&mut run, &mut spans);
        spans
    }

    /// The number part starting at token `i`, and the token after it.
    fn item_at(&self, i: usize) -> Option<(Item, usize)> {
        let (mut item, next) = match self.kind(i)? {
            Kind::Num => self.written_at(i),
            Kind::Word => self.spoken_at(i)?,
            Kind::Sym(_) => return None,
        };
        // A leading "+" (glued or one space) or "plus" marks E.164.
        if i > 0 && self.free(i - 1) {
            let plus_sym = self.sym(i - 1) == Some('+')
                && self.toks[i].start - self.toks[i - 1].end <= 1
                && item.start == self.toks[i].start;
            if plus_sym || self.word_is(i - 1, "plus") {
                item.plus = true;
                item.start = self.toks[i - 1].start;
            }
        }
        Some((item, next))
    }

    fn written_at(&self, i: usize) -> (Item, usize) {
        let is_num3 = |k: usize| self.kind(k) == Some(Kind::Num) && self.s(k).len() == 3;
        let comma_glued = |k: usize| {
            self.sym(k + 1) == Some(',')
                && self.glued(k, k + 1)
                && self.glued(k + 1, k + 2)
                && self.kind(k + 2) == Some(Kind::Num)
        };
        // "1,250,000": a formatted amount, not digits to read out.
        let mut last = i;
        for _ in 0..MAX_WALK {
            if comma_glued(last) && is_num3(last + 2) {
                last += 2;
            } else {
                break;
            }
        }
        let thousands = last > i && !comma_glued(last);
        if !thousands {
            last = i;
        }
        // Letters or ':' glued on either side: "A12345", "10am", "10:30".
        let word_or_colon = |k: usize| self.kind(k) == Some(Kind::Word) || self.sym(k) == Some(':');
        let blocked = thousands
            || (i > 0 && self.glued(i - 1, i) && word_or_colon(i - 1))
            || (i > 0 && self.sym(i - 1).is_some_and(|c| CURRENCY.contains(&c)))
            || (self.glued(last, last + 1) && word_or_colon(last + 1))
            || self.sym(last + 1) == Some('%');
        let digits: Vec<u8> = (i..=last)
            .step_by(2)
            .flat_map(|k| self.s(k).bytes().map(|b| b - b'0'))
            .collect();
        let mut start = self.toks[i].start;
        let mut end = self.toks[last].end;
        let mut next = last + 1;
        // "(555)": the parentheses go with the digits.
        if i > 0 && self.sym(i - 1) == Some('(') && self.glued(i - 1, i) && self.free(i - 1) {
            start = self.toks[i - 1].start;
            if self.sym(next) == Some(')') && self.glued(last, next) {
                end = self.toks[next].end;
                next += 1;
            }
        }
        let year = digits.len() == 4 && {
            let v = digits.iter().fold(0u32, |v, d| v * 10 + u32::from(*d));
            (1900..=2099).contains(&v)
        };
        let item = Item {
            start,
            end,
            digits,
            written: true,
            oh: false,
            plus: false,
            blocked,
            year,
        };
        (item, next)
    }

    fn spoken_at(&self, i: usize) -> Option<(Item, usize)> {
        let w = self.s(i).to_ascii_lowercase();
        let (digit, count, end_tok) = match w.as_str() {
            "double" | "triple" => {
                let n = if w == "double" { 2 } else { 3 };
                let d = if self.kind(i + 1) == Some(Kind::Num) && self.s(i + 1).len() == 1 {
                    self.s(i + 1).as_bytes()[0] - b'0'
                } else if self.kind(i + 1) == Some(Kind::Word) {
                    words::digit(&self.s(i + 1).to_ascii_lowercase())?
                } else {
                    return None;
                };
                if !self.free(i + 1) {
                    return None;
                }
                (d, n, i + 1)
            }
            _ => (words::digit(&w)?, 1, i),
        };
        let item = Item {
            start: self.toks[i].start,
            end: self.toks[end_tok].end,
            digits: vec![digit; count],
            written: false,
            oh: count == 1 && matches!(w.as_str(), "oh" | "o"),
            plus: false,
            blocked: false,
            year: false,
        };
        Some((item, end_tok + 1))
    }

    /// Whether `next` continues the number `prev` belongs to.
    fn connected(&self, prev: &Item, next: &Item) -> bool {
        if next.plus || next.start < prev.end || next.start - prev.end > MAX_GAP {
            return false;
        }
        let gap = &self.text[prev.end..next.start];
        let mut seps = 0;
        let mut comma = false;
        for c in gap.chars() {
            if c == ',' {
                comma = true;
            }
            if NUMBER_SEPS.contains(&c) {
                seps += 1;
            } else if !c.is_whitespace() {
                return false;
            }
        }
        // A '.' with space around it ends a sentence, not a group.
        if seps > 2 || (gap.contains('.') && gap != ".") {
            return false;
        }
        // "2019, 2020" or "2019 2020": years listed, not a number read out.
        if prev.year && next.year {
            return false;
        }
        !(comma && prev.written && next.written && (prev.year || next.year))
    }

    /// Whether a group boundary lies between two connected items: every
    /// written number is its own group; spoken digits group until a pause
    /// mark ("one two three, four five").
    fn group_break(&self, prev: &Item, next: &Item) -> bool {
        if prev.written || next.written {
            return true;
        }
        let gap = &self.text[prev.end..next.start];
        gap != "-" && gap.chars().any(|c| !c.is_whitespace())
    }

    /// Classifies a finished run and empties it.
    fn classify_run(&self, run: &mut Vec<Item>, spans: &mut Vec<(usize, usize, PiiKind)>) {
        if run.is_empty() {
            return;
        }
        let items = std::mem::take(run);
        // "Oh" is a zero only among spoken digits ("five five oh one");
        // elsewhere it is an interjection and splits the run.
        let spoken = |k: usize| items.get(k).is_some_and(|it| !it.written);
        let mut from = 0;
        for k in 0..=items.len() {
            let split =
                k == items.len() || (items[k].oh && !(k > 0 && spoken(k - 1)) && !spoken(k + 1));
            if split {
                if from < k {
                    self.classify(&items[from..k], spans);
                }
                from = k + 1;
            }
        }
    }

    fn classify(&self, items: &[Item], spans: &mut Vec<(usize, usize, PiiKind)>) {
        let total: usize = items.iter().map(|it| it.digits.len()).sum();
        if total < 7 {
            return;
        }
        // Cards first, anywhere in the run (a CVV or expiry read out next to
        // the card must not hide it), longest Luhn-valid window. Windows
        // start and end on group boundaries, and comma-separated single
        // digits ("Four, one, one, …") count as one stretch, so a spoken
        // number that fails Luhn is not rescued by some sub-window that
        // passes by chance.
        let groups = self.groups(items);
        let mut bounds: Vec<usize> = Vec::with_capacity(groups.len() + 1);
        for (g, &(start, len)) in groups.iter().enumerate() {
            if g == 0 || !(len == 1 && groups[g - 1].1 == 1) {
                bounds.push(start);
            }
        }
        bounds.push(items.len());
        // Cards are read in fours (or 4-6-5); 2–3 digit blocks are phones.
        let card_part = |it: &Item| !it.written || it.digits.len() == 1 || it.digits.len() >= 4;
        let mut cards: Vec<(usize, usize)> = Vec::new();
        let mut b = 0;
        while b + 1 < bounds.len() {
            let s = bounds[b];
            let mut best = None;
            if !items[s].plus && items[s].digits.first() != Some(&0) {
                let mut digits: Vec<u8> = Vec::with_capacity(20);
                'windows: for eb in b + 1..bounds.len() {
                    for it in &items[bounds[eb - 1]..bounds[eb]] {
                        digits.extend_from_slice(&it.digits);
                        if digits.len() > 19 || !card_part(it) {
                            break 'windows;
                        }
                    }
                    if digits.len() >= 13 && luhn_valid(&digits) {
                        best = Some(eb);
                    }
                }
            }
            if let Some(eb) = best {
                cards.push((s, bounds[eb]));
                b = eb;
            } else if let Some(e) = Self::spoken_card_prefix(items, &groups, s) {
                cards.push((s, e));
                b = bounds.partition_point(|&x| x < e);
            } else {
                b += 1;
            }
        }
        // What lies between cards is checked as a whole.
        let mut from = 0;
        for &(cs, ce) in &cards {
            self.classify_rest(&items[from..cs], spans);
            spans.push((items[cs].start, items[ce - 1].end, PiiKind::Card));
            from = ce;
        }
        self.classify_rest(&items[from..], spans);
    }

    /// A card at the start of a long spoken stretch without pauses ("four
    /// one … one, one two three" read as one breath with the CVV): only the
    /// usual 16 and 15 digit lengths are tried, so a spoken number that
    /// fails Luhn is not rescued by chance. Returns the item after the card.
    fn spoken_card_prefix(items: &[Item], groups: &[(usize, usize)], s: usize) -> Option<usize> {
        let g = groups.binary_search_by_key(&s, |g| g.0).ok()?;
        let (start, len) = groups[g];
        let end = groups.get(g + 1).map_or(items.len(), |n| n.0);
        let group = &items[start..end];
        if len <= 16 || items[s].plus || group.iter().any(|it| it.written) {
            return None;
        }
        if group[0].digits.first() == Some(&0) {
            return None;
        }
        [16, 15].into_iter().find_map(|want| {
            let mut digits = Vec::with_capacity(want);
            for (k, it) in group.iter().enumerate() {
                digits.extend_from_slice(&it.digits);
                if digits.len() == want {
                    return luhn_valid(&digits).then_some(start + k + 1);
                }
                if digits.len() > want {
                    return None;
                }
            }
            None
        })
    }

    /// SSN or phone for a piece of a run that holds no card.
    fn classify_rest(&self, items: &[Item], spans: &mut Vec<(usize, usize, PiiKind)>) {
        let Some(first) = items.first() else { return };
        let total: usize = items.iter().map(|it| it.digits.len()).sum();
        let groups = self.group_lengths(items);
        let whole = (first.start, items[items.len() - 1].end);
        // A local number ("555-0134") or one Whisper heard a digit short
        // or long ("415-550134"): grouped, led by a three-digit group.
        let local = groups.len() >= 2 && groups[0] == 3 && (7..=9).contains(&total);
        if total == 9 && groups == [3, 2, 4] && !first.plus {
            spans.push((whole.0, whole.1, PiiKind::Ssn));
        } else if (10..=15).contains(&total) || (first.plus && (8..=15).contains(&total)) || local {
            spans.push((whole.0, whole.1, PiiKind::Phone));
        } else if total > 15 {
            self.nanp_phones(items, spans);
        }
    }

    /// Digit count per group, with the index of each group's first item.
    fn groups(&self, items: &[Item]) -> Vec<(usize, usize)> {
        let mut groups: Vec<(usize, usize)> = Vec::new();
        for (k, item) in items.iter().enumerate() {
            match groups.last_mut() {
                Some(g) if !self.group_break(&items[k - 1], item) => g.1 += item.digits.len(),
                _ => groups.push((k, item.digits.len())),
            }
        }
        groups
    }

    fn group_lengths(&self, items: &[Item]) -> Vec<usize> {
        self.groups(items).into_iter().map(|(_, n)| n).collect()
    }

    /// In a run too long to be one phone number, the parts shaped like
    /// `[1] 555 123 4567` (or one 10/11-digit block) are phone numbers.
    fn nanp_phones(&self, items: &[Item], spans: &mut Vec<(usize, usize, PiiKind)>) {
        let groups = self.groups(items);
        let item_end = |g: usize| groups.get(g + 1).map_or(items.len(), |n| n.0);
        let mut g = 0;
        while g < groups.len() {
            let lens: Vec<usize> = groups[g..].iter().take(4).map(|x| x.1).collect();
            let first_is_one = items[groups[g].0].digits.first() == Some(&1);
            let take = if lens.starts_with(&[1, 3, 3, 4]) && first_is_one {
                4
            } else if lens.starts_with(&[3, 3, 4]) {
                3
            } else if lens[0] == 10 || (lens[0] == 11 && first_is_one) {
                1
            } else {
                0
            };
            if take == 0 {
                g += 1;
                continue;
            }
            let last_item = item_end(g + take - 1) - 1;
            spans.push((
                items[groups[g].0].start,
                items[last_item].end,
                PiiKind::Phone,
            ));
            g += take;
        }
    }
}

/// The Luhn (mod 10) check every payment card number passes.
fn luhn_valid(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(text: &str) -> String {
        redact(text).text
    }

    fn kinds(text: &str) -> Vec<PiiKind> {
        redact(text).kinds
    }

    /// Text that must come back untouched.
    fn unchanged(text: &str) {
        let out = redact(text);
        assert_eq!(out.text, text, "redacted something in {text:?}");
        assert!(out.kinds.is_empty());
    }

    #[test]
    fn luhn() {
        assert!(luhn_valid(&[
            4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1
        ]));
        assert!(!luhn_valid(&[
            4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2
        ]));
        // 79927398713: the textbook example.
        assert!(luhn_valid(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 3]));
    }

    #[test]
    fn written_cards() {
        assert_eq!(
            r("My card number is 4111 1111 1111 1111."),
            "My card number is [CARD]."
        );
        assert_eq!(r("it's 4111-1111-1111-1111 thanks"), "it's [CARD] thanks");
        assert_eq!(r("4111111111111111"), "[CARD]");
        // Amex 15 digits, grouped 4-6-5.
        assert_eq!(r("amex 3782 822463 10005 ok"), "amex [CARD] ok");
        // Mastercard, Discover.
        assert_eq!(r("5555 5555 5555 4444"), "[CARD]");
        assert_eq!(r("6011 1111 1111 1117"), "[CARD]");
        // Whisper's comma pauses.
        assert_eq!(r("It's 4111, 1111, 1111, 1111."), "It's [CARD].");
        assert_eq!(kinds("4111 1111 1111 1111"), vec![PiiKind::Card]);
    }

    #[test]
    fn spoken_cards() {
        let spoken = "four one one one one one one one one one one one one one one one";
        assert_eq!(
            r(&format!("the number is {spoken} okay")),
            "the number is [CARD] okay"
        );
        assert_eq!(
            r("Four, one, one, one, one, one, one, one, one, one, one, one, one, one, one, one."),
            "[CARD]."
        );
        assert_eq!(
            r("four one double one, one one one one, one one one one, one one one one"),
            "[CARD]"
        );
        // Mixed words and digits.
        assert_eq!(r("four one one one 1111 1111 1111"), "[CARD]");
    }

    #[test]
    fn card_next_to_other_digits_is_still_found() {
        // Expiry or CVV read straight after the number.
        let out = redact("4111 1111 1111 1111 12 27");
        assert!(out.text.starts_with("[CARD]"), "{}", out.text);
        assert!(!out.text.contains("4111"));
        let out = redact("oh 4111 1111 1111 1111");
        assert_eq!(out.text, "oh [CARD]");
    }

    #[test]
    fn spoken_card_with_cvv_in_one_breath() {
        let card = "four one one one one one one one one one one one one one one one";
        assert_eq!(r(&format!("{card} one two three")), "[CARD] one two three");
        // Sixteen spoken digits failing Luhn, then more: no card by chance.
        let bad = "four one one one one one one one one one one one one one one two";
        unchanged(&format!("{bad} one two three"));
    }

    #[test]
    fn luhn_failures_are_not_cards() {
        unchanged("4111 1111 1111 1112");
        unchanged("the tracking number is 1234 5678 9012 3456");
        unchanged("four one one one one one one one one one one one one one one two");
        // Too long to be a card, and no phone shape inside.
        unchanged("1234567890123456789012");
    }

    #[test]
    fn phones() {
        assert_eq!(r("Call me at (555) 123-4567."), "Call me at [PHONE].");
        assert_eq!(r("call 555-123-4567 please"), "call [PHONE] please");
        assert_eq!(r("It's 555.123.4567"), "It's [PHONE]");
        assert_eq!(r("5551234567"), "[PHONE]");
        assert_eq!(r("1-800-555-0199"), "[PHONE]");
        assert_eq!(r("+1 (555) 123-4567"), "[PHONE]");
        assert_eq!(r("+44 20 7946 0958 is the office"), "[PHONE] is the office");
        assert_eq!(r("my cell is +4915123456789"), "my cell is [PHONE]");
        assert_eq!(r("555 123 4567"), "[PHONE]");
        // Local numbers, and numbers Whisper heard a digit short or long.
        assert_eq!(r("it's 555-0134."), "it's [PHONE].");
        assert_eq!(
            r("call me back on 415-550134 or"),
            "call me back on [PHONE] or"
        );
        assert_eq!(r("on 415-555-013 please"), "on [PHONE] please");
        assert_eq!(r("five five five, zero one three four"), "[PHONE]");
        assert_eq!(kinds("(555) 123-4567"), vec![PiiKind::Phone]);
    }

    #[test]
    fn spoken_phones() {
        assert_eq!(
            r("it's five five five one two three four five six seven"),
            "it's [PHONE]"
        );
        assert_eq!(
            r("Five, five, five, one, two, three, four, five, six, seven."),
            "[PHONE]."
        );
        assert_eq!(
            r("my number is five five five, oh one two, three four five six"),
            "my number is [PHONE]"
        );
        assert_eq!(
            r("double five five one two three four five six seven"),
            "[PHONE]"
        );
        assert_eq!(
            r("plus four four two oh seven nine four six oh nine five eight"),
            "[PHONE]"
        );
    }

    #[test]
    fn two_phones_in_a_row() {
        assert_eq!(r("555-123-4567 555-987-6543"), "[PHONE] [PHONE]");
        assert_eq!(r("555-123-4567 or 555-987-6543"), "[PHONE] or [PHONE]");
    }

    #[test]
    fn ssn() {
        assert_eq!(r("my social is 123-45-6789."), "my social is [SSN].");
        assert_eq!(r("123 45 6789"), "[SSN]");
        assert_eq!(
            r("It's one two three, four five, six seven eight nine."),
            "It's [SSN]."
        );
        assert_eq!(kinds("123-45-6789"), vec![PiiKind::Ssn]);
        // Nine digits not grouped 3-2-4 are not claimed as an SSN.
        unchanged("zip 12345-6789");
        unchanged("reference 123456789");
    }

    #[test]
    fn emails() {
        assert_eq!(
            r("Sure, it's john.smith@example.com."),
            "Sure, it's [EMAIL]."
        );
        assert_eq!(r("mail a_b+tag@mail.co.uk now"), "mail [EMAIL] now");
        assert_eq!(
            r("my email is john dot smith at example dot com"),
            "my email is [EMAIL]"
        );
        assert_eq!(r("It's jsmith42 at gmail.com."), "It's [EMAIL].");
        assert_eq!(r("It's John.Smith at Gmail dot com."), "It's [EMAIL].");
        assert_eq!(
            r("jane underscore doe at my-company dot co dot uk thanks"),
            "[EMAIL] thanks"
        );
        assert_eq!(r("it's j o h n at gmail dot com"), "it's [EMAIL]");
        assert_eq!(kinds("a@b.io"), vec![PiiKind::Email]);
    }

    #[test]
    fn not_emails() {
        unchanged("I'll be at home at 5.");
        unchanged("I'm at amazon dot com right now");
        unchanged("I bought it at Walmart. Com cast is my provider");
        unchanged("meet at noon. Then we go");
        unchanged("the @ sign");
        unchanged("@handle on twitter");
        unchanged("email me at the usual address");
        unchanged("at 5 at 6 at 7 at home dot com");
    }

    #[test]
    fn ordinary_numbers_survive() {
        unchanged("The technician comes at 10:30 tomorrow.");
        unchanged("It costs $25 a month, or $1,250.00 a year.");
        unchanged("I was charged $1,250,000,000 apparently");
        unchanged("I've been a customer since 2015.");
        unchanged("in 2019, 2020, 2021 and 2022 I paid on time");
        unchanged("2019 2020 2021 2022");
        unchanged("Your order number is 123456.");
        unchanged("order 1234567 shipped");
        unchanged("It went up 15% to 45.99 per month");
        unchanged("between 8am and 5pm on 03/15/2024");
        unchanged("the date was 2024-03-15");
        unchanged("I have one question and two problems");
        unchanged("one two three testing");
        unchanged("Oh, okay. Oh no.");
        unchanged("ticket A1234567890 and INC0012345678");
        unchanged("1, 2, 3, 4, 5, 6, 7, 8, 9");
        unchanged("4 5 6 7");
        unchanged("99.9% uptime, version 10.15.7");
    }

    #[test]
    fn mixed_line() {
        let out = redact(
            "Card 4111 1111 1111 1111, phone (555) 123-4567, mail a.b@example.org, SSN 123-45-6789, due $25 at 10:30 in 2024.",
        );
        assert_eq!(
            out.text,
            "Card [CARD], phone [PHONE], mail [EMAIL], SSN [SSN], due $25 at 10:30 in 2024."
        );
        assert_eq!(
            out.kinds,
            vec![PiiKind::Card, PiiKind::Phone, PiiKind::Email, PiiKind::Ssn]
        );
    }

    #[test]
    fn idempotent() {
        let once = r("call 555-123-4567 or mail a@b.com, card 4111 1111 1111 1111");
        assert_eq!(r(&once), once);
        unchanged("[CARD] [PHONE] [EMAIL] [SSN]");
    }

    #[test]
    fn kinds_serialize_snake_case() {
        let json = serde_json::to_string(&redact("123-45-6789 and a@b.com")).unwrap();
        assert_eq!(
            json,
            r#"{"text":"[SSN] and [EMAIL]","kinds":["ssn","email"]}"#
        );
        let back: Redacted = serde_json::from_str(&json).unwrap();
        assert_eq!(back.kinds, vec![PiiKind::Ssn, PiiKind::Email]);
    }

    #[test]
    fn odd_input_never_panics() {
        let cases = [
            "",
            " ",
            "@",
            "at",
            "at dot com",
            "@.",
            "a@",
            "@b.com",
            "+",
            "(",
            "()",
            "(5",
            "5)",
            "+ + +",
            "$",
            "double",
            "double double",
            "plus plus one",
            "1,",
            ",1",
            "1,000,",
            "🙂 4111 1111 1111 1111 🙂",
            "ñandú@ejemplo.es",
            "४१११ १११११",
            "日本語のテキスト 555-123-4567 です",
            "\u{200b}555\u{200b}123\u{200b}4567",
            "e\u{301}@x.com",
            "5\u{0}5",
        ];
        for case in cases {
            let out = redact(case);
            if out.kinds.is_empty() {
                assert_eq!(out.text, case);
            }
            assert_eq!(
                redact(&out.text).text,
                out.text,
                "not idempotent on {case:?}"
            );
        }
        assert_eq!(
            r("日本語のテキスト 555-123-4567 です"),
            "日本語のテキスト [PHONE] です"
        );
    }

    #[test]
    fn long_inputs_are_fine() {
        let digits = "4".repeat(100_000);
        unchanged(&digits);
        let words = "four ".repeat(20_000);
        let _ = redact(&words);
        let ats = "a.".repeat(20_000) + "@" + &"b.".repeat(20_000);
        let _ = redact(&ats);
        // Shapes that would be quadratic with unbounded window searches.
        let _ = redact(&"1 ".repeat(50_000));
        let _ = redact(&"1234 ".repeat(50_000));
        let _ = redact(&"at ".repeat(50_000));
        let _ = redact(&"a@".repeat(50_000));
        let _ = redact(&"x dot ".repeat(50_000));
        let line = "call 555-123-4567 now. ".repeat(2_000);
        let out = redact(&line);
        assert_eq!(out.kinds.len(), 2_000);
        assert!(!out.text.contains("4567"));
    }

    #[test]
    fn tentative_text_hides_every_longer_number() {
        assert_eq!(
            redact_tentative("call me back on 415 55"),
            "call me back on [NUMBER]"
        );
        assert_eq!(
            redact_tentative("call me back on 415 555 501"),
            "call me back on [PHONE]"
        );
        assert_eq!(redact_tentative("it's 4111-11"), "it's [NUMBER]");
        assert_eq!(redact_tentative("call 555-123-4567."), "call [PHONE].");
        assert_eq!(
            redact_tentative("I have 2 kids, 10 dogs"),
            "I have 2 kids, 10 dogs"
        );
        assert_eq!(redact_tentative("à 12 h, ok 123"), "à 12 h, ok [NUMBER]");
    }
}
