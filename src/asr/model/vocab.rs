//! Whisper's byte-level BPE vocabulary, from CTranslate2's `vocabulary.txt`
//! to the raw token bytes whisper.cpp stores.
//!
//! `vocabulary.txt` holds one token per line in id order, each written with
//! GPT-2's byte-to-unicode table (so a space is `Ġ`). whisper.cpp wants the
//! original bytes of the ordinary tokens only, the ids before
//! `<|endoftext|>`, and numbers the special tokens itself from `n_vocab`.

use super::error::ModelError;

const END_OF_TEXT: &[u8] = b"<|endoftext|>";

/// GPT-2's `bytes_to_unicode()`: printable Latin-1 bytes stand for
/// themselves, the other 68 are moved to U+0100 onwards in byte order.
fn byte_to_char() -> [char; 256] {
    let printable = |b: u32| (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
    let mut table = ['\0'; 256];
    let mut next = 0x100;
    for b in 0..256u32 {
        let c = if printable(b) {
            b
        } else {
            next += 1;
            next - 1
        };
        // Both ranges are valid scalar values.
        table[b as usize] = char::from_u32(c).unwrap_or('\0');
    }
    table
}

/// The ordinary tokens' raw bytes, in id order.
///
/// Lines are split on `\n` only: a token may be empty (id 50256 of the
/// multilingual vocabulary is), and other line breaks never occur inside the
/// byte-encoded text. `n_vocab` (from the model) decides how many ordinary
/// tokens there must be: 50256 for English-only models, 50257 otherwise,
/// because whisper.cpp derives every special token id from that split.
pub fn ggml_vocabulary(vocabulary_txt: &[u8], n_vocab: usize) -> Result<Vec<Vec<u8>>, ModelError> {
    let mut lines: Vec<&[u8]> = vocabulary_txt.split(|&b| b == b'\n').collect();
    // A final newline leaves one empty piece that is not a token.
    if vocabulary_txt.last() == Some(&b'\n') {
        lines.pop();
    }
    if lines.len() != n_vocab {
        return Err(ModelError::Vocabulary(format!(
            "{} tokens, but the model's embedding has {n_vocab} rows",
            lines.len()
        )));
    }
    let eot = lines
        .iter()
        .position(|l| *l == END_OF_TEXT)
        .ok_or_else(|| ModelError::Vocabulary("no <|endoftext|> token".into()))?;
    let expected_eot = if n_vocab >= 51865 { 50257 } else { 50256 };
    if eot != expected_eot {
        return Err(ModelError::Vocabulary(format!(
            "<|endoftext|> has id {eot}; whisper.cpp expects {expected_eot} for n_vocab {n_vocab}"
        )));
    }

    let mut char_to_byte = std::collections::HashMap::with_capacity(256);
    for (b, c) in byte_to_char().iter().enumerate() {
        char_to_byte.insert(*c, b as u8);
    }
    lines[..eot]
        .iter()
        .enumerate()
        .map(|(id, line)| {
            let text = std::str::from_utf8(line)
                .map_err(|_| ModelError::Vocabulary(format!("token {id} is not UTF-8")))?;
            text.chars()
                .map(|c| {
                    char_to_byte.get(&c).copied().ok_or_else(|| {
                        ModelError::Vocabulary(format!(
                            "token {id} ({text:?}) has {c:?}, which is not in GPT-2's byte table"
                        ))
                    })
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vocabulary with `n` lines: a few real tokens, filler, then the
    /// special tokens from `eot` on.
    fn vocab(n: usize, eot: usize, empty_at: Option<usize>) -> Vec<u8> {
        let mut out = Vec::new();
        for id in 0..n {
            let tok = match id {
                0 => "!".to_string(),
                1 => "Ġthe".to_string(),
                2 => "Ċ".to_string(),
                3 => "Ã©".to_string(),
                _ if Some(id) == empty_at => String::new(),
                _ if id == eot => "<|endoftext|>".to_string(),
                _ if id > eot => format!("<|special{id}|>"),
                _ => "a".to_string(),
            };
            out.extend_from_slice(tok.as_bytes());
            out.push(b'\n');
        }
        out
    }

    #[test]
    fn decodes_gpt2_bytes_and_stops_before_end_of_text() {
        let v = ggml_vocabulary(&vocab(51864, 50256, None), 51864).unwrap();
        assert_eq!(v.len(), 50256);
        assert_eq!(v[0], b"!");
        assert_eq!(v[1], b" the");
        assert_eq!(v[2], b"\n");
        assert_eq!(v[3], "é".as_bytes());
    }

    #[test]
    fn keeps_the_empty_multilingual_token() {
        let v = ggml_vocabulary(&vocab(51865, 50257, Some(50256)), 51865).unwrap();
        assert_eq!(v.len(), 50257);
        assert!(v[50256].is_empty());
    }

    #[test]
    fn rejects_mismatched_sizes_and_unknown_characters() {
        assert!(ggml_vocabulary(&vocab(51863, 50256, None), 51864).is_err());
        assert!(ggml_vocabulary(&vocab(51865, 50256, None), 51865).is_err());
        let mut bad = vocab(51864, 50256, None);
        bad[0] = b' '; // a raw space never appears in byte-encoded text
        assert!(matches!(
            ggml_vocabulary(&bad, 51864),
            Err(ModelError::Vocabulary(_))
        ));
    }

    #[test]
    fn byte_table_is_a_bijection() {
        let t = byte_to_char();
        let set: std::collections::HashSet<char> = t.iter().copied().collect();
        assert_eq!(set.len(), 256);
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[b'A' as usize], 'A');
    }
}
