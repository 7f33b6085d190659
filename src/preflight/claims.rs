//! What an access token says about who is calling: tenant, app and permissions, read from its
//! JWT payload. The signature is not checked (Graph does that); the claims only explain in
//! advance what Graph will decide. The token itself is never shown.

use base64::Engine as _;
use serde_json::Value;

/// The permission the assignment route needs.
pub const NEEDED: &str = "DeviceManagementServiceConfig.ReadWrite.All";

/// What a group run needs of the directory beyond reading Intune's identities: each entry is a
/// permission and the broader ones that include it.
pub const GROUP_NEEDS: [&[&str]; 2] = [
    &[
        "GroupMember.ReadWrite.All",
        "Group.ReadWrite.All",
        "Directory.ReadWrite.All",
    ],
    &[
        "Device.Read.All",
        "Device.ReadWrite.All",
        "Directory.Read.All",
        "Directory.ReadWrite.All",
    ],
];

/// The claims preflight reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    /// `tid`.
    pub tenant: Option<String>,
    /// `appid` (v1 tokens) or `azp` (v2).
    pub app: Option<String>,
    /// `app_displayname`, when the token carries it.
    pub app_name: Option<String>,
    /// `roles`: application permissions (app-only tokens).
    pub roles: Vec<String>,
    /// `scp`: delegated permissions, when the token acts for a user.
    pub scopes: Option<Vec<String>>,
}

impl Claims {
    /// The payload of `token`; `None` when it is not a JWT with a JSON object payload.
    pub fn read(token: &str) -> Option<Claims> {
        let mut parts = token.trim().split('.');
        let (Some(_), Some(payload), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()?;
        let claims: Value = serde_json::from_slice(&bytes).ok()?;
        if !claims.is_object() {
            return None;
        }
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let roles = match claims.get("roles") {
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        Some(Claims {
            tenant: text("tid"),
            app: text("appid").or_else(|| text("azp")),
            app_name: text("app_displayname"),
            roles,
            scopes: text("scp").map(|s| s.split_whitespace().map(str::to_string).collect()),
        })
    }

    /// Whether the token grants [`NEEDED`]: as an application role, or as a delegated scope
    /// when the token acts for a user.
    pub fn grants_needed(&self) -> bool {
        self.grants_any(&[NEEDED])
    }

    /// Whether the token grants one of `any_of` (a permission, or one that includes it).
    pub fn grants_any(&self, any_of: &[&str]) -> bool {
        let has = |list: &[String]| {
            list.iter()
                .any(|p| any_of.iter().any(|w| p.eq_ignore_ascii_case(w)))
        };
        has(&self.roles) || self.scopes.as_deref().is_some_and(has)
    }

    /// The permissions the token holds, for the report: roles, or `scp` for delegated tokens.
    pub fn permissions(&self) -> String {
        let list = match &self.scopes {
            Some(scopes) if self.roles.is_empty() => scopes,
            _ => &self.roles,
        };
        if list.is_empty() {
            "none".to_string()
        } else {
            list.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jwt(claims: Value) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            b64.encode(r#"{"alg":"RS256"}"#),
            b64.encode(claims.to_string())
        )
    }

    #[test]
    fn reads_app_only_and_delegated_tokens() {
        let app = Claims::read(&jwt(json!({
            "tid": "t1", "appid": "a1", "app_displayname": "Bulk",
            "roles": [NEEDED, "Device.Read.All"]
        })))
        .unwrap();
        assert_eq!(app.tenant.as_deref(), Some("t1"));
        assert_eq!(app.app.as_deref(), Some("a1"));
        assert_eq!(app.app_name.as_deref(), Some("Bulk"));
        assert!(app.grants_needed());

        let v2 = Claims::read(&jwt(json!({"tid": "t", "azp": "a2", "roles": ["X"]}))).unwrap();
        assert_eq!(v2.app.as_deref(), Some("a2"));
        assert!(!v2.grants_needed());
        assert_eq!(v2.permissions(), "X");

        let user = Claims::read(&jwt(
            json!({"scp": "User.Read DeviceManagementServiceConfig.ReadWrite.All"}),
        ))
        .unwrap();
        assert!(user.grants_needed());
        let none = Claims::read(&jwt(json!({"tid": "t"}))).unwrap();
        assert!(!none.grants_needed());
        assert_eq!(none.permissions(), "none");
    }

    #[test]
    fn opaque_or_broken_tokens_have_no_claims() {
        for token in [
            "0123456789abcdef",
            "a.b.c",
            "a.b",
            "a.b.c.d",
            "",
            "x.bnVsbA.y",
        ] {
            assert_eq!(Claims::read(token), None, "{token}");
        }
    }
}
