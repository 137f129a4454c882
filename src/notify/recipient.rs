//! The `to` of an e-mail subscription: exactly one plain address, nothing a mail header could
//! read as more.
//!
//! lettre's [`Address`] parser has the last word, after checks of our own that are stricter
//! than RFC 5322 on purpose: the value goes into a `To` header and an SMTP `RCPT TO`, and
//! anything beyond `local@domain` in printable ASCII (a display name, a second recipient, a
//! group, a comment, a quoted local part, a line break, an encoded word) is either a mistake
//! or an attempt to make the service write a header or a recipient of somebody else's choice.
//! Internationalised addresses are refused too (look-alike characters would show the owner one
//! address and mail another); a domain in its ASCII `xn--` form is accepted, as it names
//! exactly the domain the mail goes to.

use lettre::Address;

/// Longest address, in bytes (RFC 5321's path limit less the angle brackets).
pub const MAX_ADDRESS_BYTES: usize = 254;

/// Longest local part, in bytes (RFC 5321).
const MAX_LOCAL_BYTES: usize = 64;

/// Characters of a local part besides letters and digits: RFC 5322's `atext` without `%` (the
/// old source-route escape, and the start of a percent-encoded line break), `!` (a UUCP bang
/// path: `host!user@relay` is forwarded to `host` by relays that still honour it), and the
/// characters a shell or a mail-to-program alias gives a meaning: `|` (pipe to a command),
/// `/` (deliver to a file), `` ` `` and `$` (command and variable substitution), `&`.
const LOCAL_PUNCTUATION: &str = ".#'*+=?^_{}~-";

/// Reads `to` as one plain address; on refusal, why (a sentence for the problem's `detail`).
pub fn parse(to: &str) -> Result<Address, String> {
    if to.is_empty() {
        return Err("to is empty; give one address, like alice@example.com".to_owned());
    }
    if to.len() > MAX_ADDRESS_BYTES {
        return Err(format!(
            "to is {} bytes long; an address has at most {MAX_ADDRESS_BYTES}",
            to.len()
        ));
    }
    if to.chars().any(|c| c.is_control()) {
        return Err(
            "to contains a line break or another control character; give one plain address"
                .to_owned(),
        );
    }
    if !to.is_ascii() {
        return Err(
            "to contains non-ASCII characters; internationalised addresses are not accepted \
             (write the domain in its xn-- form)"
                .to_owned(),
        );
    }
    if to.contains(|c: char| c.is_ascii_whitespace() || "\"(),:;<>[]\\".contains(c)) {
        return Err(
            "to must be exactly one plain address (local@domain): no display name, quotes, \
             comments, groups, brackets or several recipients"
                .to_owned(),
        );
    }
    let Some((local, domain)) = to.split_once('@') else {
        return Err("to has no @; give one address, like alice@example.com".to_owned());
    };
    if domain.contains('@') {
        return Err("to has more than one @; give exactly one address".to_owned());
    }
    if local.is_empty() || local.len() > MAX_LOCAL_BYTES {
        return Err(format!(
            "the part of to before the @ must be 1 to {MAX_LOCAL_BYTES} bytes long"
        ));
    }
    if !local
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || LOCAL_PUNCTUATION.contains(c))
    {
        return Err(format!(
            "the part of to before the @ may hold letters, digits and {LOCAL_PUNCTUATION} only"
        ));
    }
    if local.starts_with('-') {
        return Err(
            "the part of to before the @ must not start with - (a program receiving it could \
             read it as an option)"
                .to_owned(),
        );
    }
    // An RFC 2047 encoded word: a header decoder could turn it into anything.
    if local.contains("=?") || local.contains("?=") {
        return Err("to contains an encoded word (=?...?=); give one plain address".to_owned());
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2
        || labels.iter().any(|label| {
            label.is_empty()
                || label.len() > 63
                || label.starts_with('-')
                || label.ends_with('-')
                || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
    {
        return Err(
            "the domain of to must be a host name with a dot (example.com), not an address \
             literal or a single label"
                .to_owned(),
        );
    }
    // Every top-level domain begins with a letter. A last label that begins with a digit is
    // an IPv4 address in some spelling (127.0.0.1, 0x7f.0.0.1, 10.1, x.123): some relays route
    // `RCPT TO:<a@127.0.0.1>` to that address.
    if labels
        .last()
        .is_some_and(|tld| !tld.starts_with(|c: char| c.is_ascii_alphabetic()))
    {
        return Err(
            "the domain of to must be a host name whose last label begins with a letter \
             (example.com), not an IP address in any spelling"
                .to_owned(),
        );
    }
    to.parse::<Address>()
        .map_err(|e: lettre::address::AddressError| format!("to is not an e-mail address: {e}"))
}

/// The mailbox an address most likely reaches, as the confirmation limits and the
/// suppression list count it: lower-cased (local parts are case-sensitive in theory, never in
/// practice), the `+tag` of the local part dropped (sub-addressing: `a+1@` and `a+2@` reach
/// `a@`), and the dots of the local part dropped, for every domain: Gmail and Google Workspace
/// domains ignore them, and no one can tell a Workspace domain from its name. The cost is that
/// `j.smith@` and `jsmith@` of a domain that tells them apart share a limit and a refusal.
/// Works on any stored string with an `@` (the last one splits it).
pub fn normalised(address: &str) -> String {
    let lower = address.to_ascii_lowercase();
    let (local, domain) = lower.rsplit_once('@').unwrap_or(("", lower.as_str()));
    let base = local.split('+').next().unwrap_or_default();
    let base: String = base.chars().filter(|c| *c != '.').collect();
    format!("{base}@{domain}")
}

/// What the database keeps of an address for the limits and the suppression list: the SHA-256
/// of [`normalised`], so that no list of addresses that refused mail is stored.
pub fn address_hash(address: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(normalised(address).as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_plain_address_is_accepted_as_written() {
        for ok in [
            "alice@example.com",
            "a.b+tag@mail.example.co.uk",
            "o'brien@example.ie",
            "a_b=c#d*e{f}~g^h?i@example.com",
            "x@example.xn--p1ai",
            "x@xn--80ak6aa92e.com",
            "UPPER@Example.COM",
        ] {
            assert_eq!(parse(ok).expect(ok).to_string(), ok);
        }
    }

    #[test]
    fn anything_but_one_plain_address_is_refused() {
        let long = format!("{}@example.com", "a".repeat(250));
        for bad in [
            "",
            "alice",
            "alice@",
            "@example.com",
            "alice@example.com\r\nBcc: victim@example.org",
            "alice@example.com\nBcc: victim@example.org",
            "alice@example.com\0",
            "alice@example.com, bob@example.com",
            "alice@example.com;bob@example.com",
            "friends: alice@example.com, bob@example.com;",
            "Alice <alice@example.com>",
            "<alice@example.com>",
            "\"alice smith\"@example.com",
            "alice(comment)@example.com",
            "alice@example.com (comment)",
            "alice@@example.com",
            "alice@bob@example.com",
            "alice@[127.0.0.1]",
            "alice@localhost",
            "alice%0d%0abcc@example.com",
            "=?utf-8?q?alice=0d=0a?=@example.com",
            "alice@exаmple.com",
            "аlice@example.com",
            "alice@-example.com",
            "alice@example..com",
            "a@127.0.0.1",
            "a@10.0.0.1",
            "a@0x7f.0.0.1",
            "a@127.0.0.0x1",
            "a@x.123",
            "a@2130706433",
            "a@1.2.3.4.5",
            "x.test!a@y.test",
            "|/bin/sh@x.test",
            "a|b@x.test",
            "a/b@x.test",
            "a`id`@x.test",
            "a$HOME@x.test",
            "a&b@x.test",
            "-oQ@x.test",
            &long,
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_limits_key_ignores_case_tags_and_dots_of_the_local_part() {
        let key = normalised("victim@mail.test");
        for same in [
            "Victim@Mail.Test",
            "victim+1@mail.test",
            "victim+x@mail.test",
            "victim+@mail.test",
            "vic.tim@mail.test",
            "V.I.C.T.I.M+a+b@MAIL.test",
        ] {
            assert_eq!(normalised(same), key, "{same}");
            assert_eq!(address_hash(same), address_hash("victim@mail.test"));
        }
        for other in [
            "victim@mail2.test",
            "victim2@mail.test",
            "victim@sub.mail.test",
        ] {
            assert_ne!(normalised(other), key, "{other}");
        }
    }
}
