//! Input rules for accounts: usernames, passwords, emails, API key names.

use crate::ChatError;

pub const USERNAME_MIN: usize = 3;
pub const USERNAME_MAX: usize = 32;
pub const PASSWORD_MIN: usize = 8;
pub const PASSWORD_MAX: usize = 128;
pub const EMAIL_MAX: usize = 254;
pub const API_KEY_NAME_MAX: usize = 64;

fn username_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// 3-32 characters of `A-Z a-z 0-9 _ . -`.
pub fn username(name: &str) -> Result<(), ChatError> {
    let n = name.chars().count();
    if !(USERNAME_MIN..=USERNAME_MAX).contains(&n) {
        return Err(ChatError::invalid("username", format_args!("must be {USERNAME_MIN}-{USERNAME_MAX} characters")));
    }
    if !name.chars().all(username_char) {
        return Err(ChatError::invalid("username", "may only contain letters, digits, `_`, `.` and `-`"));
    }
    Ok(())
}

/// 8-128 characters (Unicode scalar values).
pub fn password(password: &str) -> Result<(), ChatError> {
    let n = password.chars().count();
    if !(PASSWORD_MIN..=PASSWORD_MAX).contains(&n) {
        return Err(ChatError::invalid("password", format_args!("must be {PASSWORD_MIN}-{PASSWORD_MAX} characters")));
    }
    Ok(())
}

/// A plain `local@domain.tld` address of at most 254 characters (the
/// local part is not held to SMTP's 64: the OpenAPI pattern cannot say it
/// and nothing here sends mail); returns
/// it with the domain lower-cased. Quoted local parts, IP-literal domains
/// and comments are refused: they are legal but almost always mistakes here.
pub fn email(email: &str) -> Result<String, ChatError> {
    let bad = |why: &str| ChatError::invalid("email", why);
    if email.is_empty() || email.len() > EMAIL_MAX {
        return Err(bad(&format!("must be 1-{EMAIL_MAX} characters")));
    }
    let (local, domain) = email.rsplit_once('@').ok_or_else(|| bad("must look like name@example.com"))?;
    let local_ok = !local.is_empty()
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~.-".contains(&b));
    if !local_ok {
        return Err(bad("the part before `@` is not a valid mailbox name"));
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-') && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && labels.last().is_some_and(|tld| tld.len() >= 2 && !tld.bytes().all(|b| b.is_ascii_digit()));
    if !domain_ok {
        return Err(bad("the part after `@` is not a valid domain name"));
    }
    Ok(format!("{local}@{}", domain.to_ascii_lowercase()))
}

/// 1-64 characters, no control characters, not blank.
pub fn api_key_name(name: &str) -> Result<(), ChatError> {
    let n = name.chars().count();
    if n == 0 || n > API_KEY_NAME_MAX || name.trim().is_empty() {
        return Err(ChatError::invalid("name", format_args!("must be 1-{API_KEY_NAME_MAX} characters and not blank")));
    }
    if name.chars().any(char::is_control) {
        return Err(ChatError::invalid("name", "must not contain control characters"));
    }
    Ok(())
}

/// A username made from a hint (an identity provider's preferred name,
/// email or subject): allowed characters only, cut to 24 so a suffix fits.
pub fn derive_username(hint: &str) -> String {
    let mut name: String = hint.chars().filter(|c| username_char(*c)).take(24).collect();
    if name.chars().count() < USERNAME_MIN {
        name = format!("user{name}");
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for ok in ["abc", "A.b-c_9", &"x".repeat(32)] {
            assert!(username(ok).is_ok(), "{ok}");
        }
        for bad in ["ab", "", &"x".repeat(33), "a b c", "ann!", "bé0", "a/b"] {
            assert!(username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords() {
        assert!(password(&"x".repeat(8)).is_ok());
        assert!(password(&"é".repeat(128)).is_ok());
        assert!(password(&"x".repeat(7)).is_err());
        assert!(password(&"x".repeat(129)).is_err());
    }

    #[test]
    fn emails() {
        assert_eq!(email("Ann.Lee+chat@Example.COM").unwrap(), "Ann.Lee+chat@example.com");
        let long_ok = format!("{}@{}.com", "a".repeat(64), ["b".repeat(63), "c".repeat(63), "d".repeat(57)].join("."));
        assert_eq!(long_ok.len(), 254);
        assert!(email(&long_ok).is_ok());
        let too_long = format!("{}@{}.com", "a".repeat(64), ["b".repeat(63), "c".repeat(63), "d".repeat(58)].join("."));
        assert!(email(&too_long).is_err());
        for bad in ["", "ann", "@x.com", "ann@", "ann@x", "ann@x.1", "a b@x.com", "ann@-x.com", "ann@x..com", ".a@x.com", "a..b@x.com", "ann@[1.2.3.4]", "\"a\"@x.com"] {
            assert!(email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn derived_usernames_are_valid() {
        for hint in ["ann", "Ann Lee", "a", "", "ann@example.com", "auth0|1234567890123456789012345678901234"] {
            let name = derive_username(hint);
            assert!(username(&name).is_ok(), "{hint:?} -> {name:?}");
            assert!(name.len() <= 24 + 4);
        }
    }
}
