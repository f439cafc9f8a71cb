//! Redis's glob-style patterns for KEYS and SCAN MATCH: `*`, `?`, `[abc]`,
//! `[^a-z]`, and `\` escapes, matched over raw bytes.
//!
//! A port of Redis 7's `stringmatchlen` (case-sensitive), including its two
//! protections against pathological patterns: a nesting limit and the early
//! exit once the rest of a pattern cannot match anywhere.

/// True when `string` matches the glob `pattern`.
#[must_use]
pub fn glob_match(pattern: &[u8], string: &[u8]) -> bool {
    let mut skip_longer = false;
    match_from(pattern, string, &mut skip_longer, 0)
}

/// True for the pattern `*`, which KEYS and SCAN treat as "every key"
/// without matching, as Redis does. (Only that exact pattern: matching
/// itself never accepts an empty key, so `**` skips the key `""` in Redis
/// too.)
#[must_use]
pub fn matches_everything(pattern: &[u8]) -> bool {
    pattern == b"*"
}

fn match_from(pattern: &[u8], string: &[u8], skip_longer: &mut bool, nesting: u32) -> bool {
    if nesting > 1000 {
        return false;
    }
    // C reads a NUL past the end of the pattern; `at` gives the same answer.
    let at = |i: usize| pattern.get(i).copied().unwrap_or(0);
    let mut p = 0usize;
    let mut s = 0usize;
    while p < pattern.len() && s < string.len() {
        match pattern[p] {
            b'*' => {
                while p + 1 < pattern.len() && pattern[p + 1] == b'*' {
                    p += 1;
                }
                if p + 1 == pattern.len() {
                    return true;
                }
                while s < string.len() {
                    if match_from(&pattern[p + 1..], &string[s..], skip_longer, nesting + 1) {
                        return true;
                    }
                    if *skip_longer {
                        return false;
                    }
                    s += 1;
                }
                // The rest cannot match from anywhere in the string, so an
                // earlier `*` taking more characters cannot help either.
                *skip_longer = true;
                return false;
            }
            b'?' => s += 1,
            b'[' => {
                p += 1;
                let negate = at(p) == b'^';
                if negate {
                    p += 1;
                }
                let c = string[s];
                let mut matched = false;
                loop {
                    if at(p) == b'\\' && pattern.len() - p >= 2 {
                        p += 1;
                        if pattern[p] == c {
                            matched = true;
                        }
                    } else if at(p) == b']' {
                        break;
                    } else if p >= pattern.len() {
                        // Unterminated class: stop at the last character so
                        // the shared advance below ends the pattern.
                        p -= 1;
                        break;
                    } else if pattern.len() - p >= 3 && pattern[p + 1] == b'-' {
                        let (mut lo, mut hi) = (pattern[p], pattern[p + 2]);
                        if lo > hi {
                            std::mem::swap(&mut lo, &mut hi);
                        }
                        p += 2;
                        if (lo..=hi).contains(&c) {
                            matched = true;
                        }
                    } else if pattern[p] == c {
                        matched = true;
                    }
                    p += 1;
                }
                if matched == negate {
                    return false;
                }
                s += 1;
            }
            b'\\' if pattern.len() - p >= 2 => {
                p += 1;
                if pattern[p] != string[s] {
                    return false;
                }
                s += 1;
            }
            literal => {
                if literal != string[s] {
                    return false;
                }
                s += 1;
            }
        }
        p += 1;
        if s == string.len() {
            while p < pattern.len() && pattern[p] == b'*' {
                p += 1;
            }
            break;
        }
    }
    p == pattern.len() && s == string.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_documented_examples() {
        // From the KEYS documentation.
        assert!(glob_match(b"h?llo", b"hello"));
        assert!(glob_match(b"h?llo", b"hallo"));
        assert!(!glob_match(b"h?llo", b"hllo"));
        assert!(glob_match(b"h*llo", b"hllo"));
        assert!(glob_match(b"h*llo", b"heeeello"));
        assert!(glob_match(b"h[ae]llo", b"hello"));
        assert!(!glob_match(b"h[ae]llo", b"hillo"));
        assert!(glob_match(b"h[^e]llo", b"hallo"));
        assert!(!glob_match(b"h[^e]llo", b"hello"));
        assert!(glob_match(b"h[a-b]llo", b"hbllo"));
        assert!(!glob_match(b"h[a-b]llo", b"hcllo"));
    }

    #[test]
    fn edges() {
        assert!(!glob_match(b"*", b""), "Redis's matcher needs a character");
        assert!(glob_match(b"*", b"anything"));
        assert!(glob_match(b"", b""));
        assert!(!glob_match(b"", b"a"));
        assert!(!glob_match(b"a", b""));
        assert!(glob_match(b"a*", b"a"));
        assert!(glob_match(b"a**", b"a"));
        assert!(glob_match(b"*a*b*", b"xxaxxbxx"));
        assert!(!glob_match(b"*a*b*", b"xxbxxaxx"));
        assert!(glob_match(b"\\*", b"*"));
        assert!(!glob_match(b"\\*", b"a"));
        assert!(glob_match(b"[\\]]", b"]"));
        assert!(glob_match(b"[z-a]", b"m"));
        assert!(glob_match(b"[abc", b"a"));
        assert!(glob_match(b"user:*:\x00", b"user:42:\x00"));
        assert!(matches_everything(b"*"));
        assert!(!matches_everything(b"**"));
        assert!(!matches_everything(b"*a"));
        assert!(!matches_everything(b""));
    }

    #[test]
    fn pathological_pattern_finishes() {
        let pattern = b"a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b";
        let string = vec![b'a'; 60];
        assert!(!glob_match(pattern, &string));
    }
}
