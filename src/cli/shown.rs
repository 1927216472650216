//! How a member or a failed record is shown to an operator: the credentials in its
//! callback and in its credential headers masked, in tables and JSON alike. The record
//! in Redis keeps the original, which `failed retry` puts back.

use serde_json::Value;

/// A failed record as `failed list --json` shows it: the credentials in its callback
/// masked, as in the table, both in the `callback` field and in the `member` string
/// (which is not the one to put back then; the record in Redis keeps that).
pub fn masked(mut record: Value) -> Value {
    let Value::Object(fields) = &mut record else {
        return record;
    };
    mask_callback_fields(fields);
    mask_secret_headers(fields);
    if let Some(Value::String(member)) = fields.get_mut("member") {
        let mut shown = crate::job::callback::mask_in_text(member);
        // A callback written with JSON escapes (`\/`, `\u0040`) is not found in the
        // text, nor is a header value found without parsing: then the member is shown
        // re-encoded, with them masked.
        if let Ok(Value::Object(mut parsed)) = serde_json::from_str::<Value>(&shown)
            && (mask_callback_fields(&mut parsed) | mask_secret_headers(&mut parsed))
        {
            shown = Value::Object(parsed).to_string();
        }
        *member = shown;
    }
    record
}

/// Masks every `callback` field (any case) of a member or record; whether one changed.
fn mask_callback_fields(fields: &mut serde_json::Map<String, Value>) -> bool {
    let mut changed = false;
    for (key, value) in fields.iter_mut() {
        if let (true, Value::String(url)) = (key.eq_ignore_ascii_case("callback"), &mut *value) {
            let shown = crate::job::callback::mask(url);
            changed |= shown != *url;
            *url = shown;
        }
    }
    changed
}

/// Masks the values of the `headers` option that usually carry credentials
/// (`Authorization`, cookies, tokens, keys); whether one changed.
pub fn mask_secret_headers(fields: &mut serde_json::Map<String, Value>) -> bool {
    let Some(Value::Object(headers)) = fields.get_mut("headers") else {
        return false;
    };
    let mut changed = false;
    for (name, value) in headers.iter_mut() {
        let n = name.to_ascii_lowercase();
        let secret = n == "cookie"
            || ["auth", "token", "secret", "key", "password"]
                .iter()
                .any(|w| n.contains(w));
        if secret && *value != "***" {
            *value = Value::String("***".into());
            changed = true;
        }
    }
    changed
}

/// The `callback` of a member or record, or `?`.
pub fn callback_of(member: &[u8]) -> String {
    callback_in(&serde_json::from_slice(member).unwrap_or(Value::Null))
}

/// The `callback` (any case) of a parsed member or record, masked, or `?`.
pub fn callback_in(value: &Value) -> String {
    match value {
        Value::Object(fields) => fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("callback"))
            .and_then(|(_, v)| v.as_str())
            .map(crate::job::callback::mask)
            .unwrap_or_else(|| "?".into()),
        _ => "?".into(),
    }
}

/// `host[:port]` of a callback, as the breakers count it; the text itself when it is
/// not a callback URL (a malformed job's record).
pub fn host_of(url: &str) -> String {
    crate::job::callback::Callback::parse(url)
        .map(|c| c.host_key().to_string())
        .unwrap_or_else(|_| url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_record_shows_its_callback_masked_even_when_escaped() {
        let record = json!({
            "Callback": "http://u:pw@h/x",
            "member": r#"{"Callback":"http:\/\/u:pw@h\/x","body":1}"#,
        });
        let shown = masked(record).to_string();
        assert!(!shown.contains("pw"), "{shown}");
        assert!(shown.contains(r#""Callback":"http://***@h/x""#), "{shown}");
    }

    #[test]
    fn credential_headers_are_masked_in_the_record_and_its_member() {
        let member = r#"{"callback":"http://h/x","headers":{"Authorization":"Bearer pw","X-Api-Key":"pw","X-Shop":"7"}}"#;
        let mut record: Value = serde_json::from_str(member).unwrap();
        record["member"] = Value::String(member.into());
        let shown = masked(record).to_string();
        assert!(!shown.contains("pw"), "{shown}");
        assert!(shown.contains(r#"\"X-Shop\":\"7\""#), "{shown}");
    }
}
