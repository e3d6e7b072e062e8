//! The password policy for accounts created or reset at the console.
//!
//! Deliberately simple and explainable to someone at a console: long enough, not built around
//! the user name, not a well-known weak password, and either long or varied. Each refusal says
//! what to change.

/// Shortest password accepted.
const MIN_LENGTH: usize = 10;

/// From this length on, a password need not mix character classes (a passphrase is fine).
const PASSPHRASE_LENGTH: usize = 16;

/// Fragments that make a short password easy to guess.
const WEAK_FRAGMENTS: &[&str] = &[
    "password", "passwort", "123456", "qwerty", "azerty", "letmein", "welcome", "outpost",
    "matrix", "changeme",
];

/// Checks `password` for the account `localpart`; `Err` says what is wrong with it.
pub fn check_strength(password: &str, localpart: &str) -> Result<(), String> {
    let length = password.chars().count();
    if length < MIN_LENGTH {
        return Err(format!(
            "it has {length} characters; use at least {MIN_LENGTH} (a few unrelated words work well)"
        ));
    }
    let lower = password.to_lowercase();
    if localpart.chars().count() >= 3 && lower.contains(&localpart.to_lowercase()) {
        return Err("it contains the user name".to_owned());
    }
    let mut distinct: Vec<char> = password.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 5 {
        return Err("it repeats too few different characters".to_owned());
    }
    if length < PASSPHRASE_LENGTH {
        if let Some(fragment) = WEAK_FRAGMENTS.iter().find(|f| lower.contains(*f)) {
            return Err(format!(
                "it is built around {fragment:?}, which is among the first guesses"
            ));
        }
        let classes = [
            password.chars().any(char::is_lowercase),
            password.chars().any(char::is_uppercase),
            password.chars().any(|c| c.is_ascii_digit()),
            password.chars().any(|c| !c.is_alphanumeric()),
        ]
        .iter()
        .filter(|present| **present)
        .count();
        if classes < 3 {
            return Err(format!(
                "mix at least three of lower case, upper case, digits and symbols, or use \
                 {PASSPHRASE_LENGTH} or more characters"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_strength;

    #[test]
    fn accepts_varied_or_long_passwords() {
        assert!(check_strength("Tr4in-Lamp-Ocean", "alice").is_ok());
        assert!(check_strength("correct horse battery staple", "alice").is_ok());
    }

    #[test]
    fn refuses_weak_passwords_with_a_reason() {
        for weak in [
            "short1!",
            "alice-Secret-1",
            "aaaaaaaaaaaa",
            "Password123",
            "lowercaseonly",
        ] {
            let reason = check_strength(weak, "alice").expect_err(weak);
            assert!(!reason.is_empty());
        }
    }
}
