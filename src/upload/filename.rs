//! File names as clients send them, made safe to store and to show.

/// Longest file name kept, in bytes.
pub const MAX_FILENAME_BYTES: usize = 255;

/// The client's file name reduced to something safe to store and show: the last path
/// component (either slash), without control or bidi-override characters, trimmed, at most
/// 255 bytes; `upload` when nothing is left. Never used as a path.
pub fn sanitize_filename(raw: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base
        .chars()
        .filter(|c| !c.is_control() && !is_bidi_control(*c))
        .collect();
    let mut name = cleaned.trim().to_owned();
    if name.len() > MAX_FILENAME_BYTES {
        let mut cut = MAX_FILENAME_BYTES;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    if name.is_empty() || name.chars().all(|c| c == '.') {
        return "upload".into();
    }
    name
}

/// Characters that reorder displayed text (`evil\u{202e}fdp.exe` shows as `evilexe.pdf`).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// An ASCII-only form of a sanitised name for the plain `filename=` parameter (the UTF-8
/// original goes in `filename*`).
pub fn ascii_filename(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_filenames_become_plain_names() {
        for (raw, want) in [
            ("../../etc/passwd", "passwd"),
            ("a/b", "b"),
            ("..\\x", "x"),
            ("C:\\Windows\\system32\\cmd.exe", "cmd.exe"),
            ("nul\0byte.txt", "nulbyte.txt"),
            ("line\r\nbreak\t.txt", "linebreak.txt"),
            ("..", "upload"),
            ("../", "upload"),
            ("", "upload"),
            ("   ", "upload"),
            ("evil\u{202e}fdp.exe", "evilfdp.exe"),
            ("résumé.pdf", "résumé.pdf"),
        ] {
            assert_eq!(sanitize_filename(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn long_names_are_cut_on_a_char_boundary() {
        let name = sanitize_filename(&"é".repeat(300));
        assert!(name.len() <= MAX_FILENAME_BYTES);
        assert!(name.chars().all(|c| c == 'é'));
    }

    #[test]
    fn ascii_fallback_has_no_quotes_or_non_ascii() {
        assert_eq!(ascii_filename("a\"b\\c é.txt"), "a_b_c _.txt");
    }
}
