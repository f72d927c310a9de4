//! Errors as Hasura shows them: [`ApiError`] is the `{"code","error","path"}`
//! body plus the HTTP status it is sent with, and [`Code`] names Hasura's
//! error codes, so each code is spelled (and given its status) once.

use std::fmt;

use serde_json::{Value, json};

/// Hasura's error codes that chime answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    /// The body is not the JSON the command needs: syntax, shape, types,
    /// missing or unknown keys.
    ParseFailed,
    /// The body is not JSON at all (nor UTF-8).
    InvalidJson,
    /// The JSON is well-formed but a value is not acceptable.
    ValidationFailed,
    /// A Hasura feature chime does not implement.
    NotSupported,
    /// No such path, or not with this method. (An event id that names no
    /// event is not an error: Hasura answers `success` or an empty list.)
    NotFound,
    /// A missing or wrong admin secret, or a role other than `admin`.
    AccessDenied,
    /// The request body is over the size limit.
    PayloadTooLarge,
    /// The log cannot accept writes.
    Unavailable,
    /// Something went wrong inside chime.
    Unexpected,
}

impl Code {
    /// The code as Hasura spells it in the JSON body.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::ParseFailed => "parse-failed",
            Code::InvalidJson => "invalid-json",
            Code::ValidationFailed => "validation-failed",
            Code::NotSupported => "not-supported",
            Code::NotFound => "not-found",
            Code::AccessDenied => "access-denied",
            Code::PayloadTooLarge => "payload-too-large",
            Code::Unavailable => "unavailable",
            Code::Unexpected => "unexpected",
        }
    }

    /// The HTTP status an error with this code is sent with: 400 bad input,
    /// 401 access denied, 404 unknown path, 413 body too large, 500 bug,
    /// 503 the log refuses writes.
    pub fn status(self) -> u16 {
        match self {
            Code::ParseFailed | Code::InvalidJson | Code::ValidationFailed | Code::NotSupported => {
                400
            }
            Code::NotFound => 404,
            Code::AccessDenied => 401,
            Code::PayloadTooLarge => 413,
            Code::Unavailable => 503,
            Code::Unexpected => 500,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// So a code can be compared with the string a client sees.
impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// An error answer: Hasura's JSON error body plus the HTTP status to send it with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status, the one [`Code::status`] gives for `code`.
    pub status: u16,
    /// Hasura's error code.
    pub code: Code,
    /// A human-readable message.
    pub error: String,
    /// A JSON path into the request (`$`, `$.args.headers[1].name`, ...).
    pub path: String,
}

impl ApiError {
    /// An error with any code; prefer the named constructors.
    pub fn new(code: Code, path: impl Into<String>, error: impl Into<String>) -> Self {
        ApiError {
            status: code.status(),
            code,
            error: error.into(),
            path: path.into(),
        }
    }

    /// [`Code::ParseFailed`] at `path`.
    pub fn parse_failed(path: impl Into<String>, error: impl Into<String>) -> Self {
        Self::new(Code::ParseFailed, path, error)
    }

    /// [`Code::ValidationFailed`] at `path`: a bad URL, a negative count, an
    /// invalid header.
    pub fn validation_failed(path: impl Into<String>, error: impl Into<String>) -> Self {
        Self::new(Code::ValidationFailed, path, error)
    }

    /// [`Code::NotSupported`] at `path`: cron triggers, transforms.
    pub fn not_supported(path: impl Into<String>, error: impl Into<String>) -> Self {
        Self::new(Code::NotSupported, path, error)
    }

    /// [`Code::InvalidJson`]: the body does not parse as JSON.
    pub fn invalid_json(error: impl Into<String>) -> Self {
        Self::new(Code::InvalidJson, "$", error)
    }

    /// Hasura's answer to any method and path it does not serve.
    pub fn resource_not_found() -> Self {
        Self::new(Code::NotFound, "$", "resource does not exist")
    }

    /// [`Code::AccessDenied`] with 400 at `$.args`: the caller is known (a
    /// valid secret, or none needed) but asks for a role other than
    /// `admin`, which may not use the metadata API. Hasura's answer, word
    /// for word.
    pub fn admin_only() -> Self {
        ApiError {
            status: 400,
            ..Self::new(Code::AccessDenied, "$.args", "restricted access : admin only")
        }
    }

    /// [`Code::AccessDenied`], about the whole request.
    pub fn access_denied(error: impl Into<String>) -> Self {
        Self::new(Code::AccessDenied, "$", error)
    }

    /// [`Code::AccessDenied`] with 403: the request is refused whoever sends
    /// it (a browser page of a foreign origin, a host name that is not this
    /// machine), not for a missing credential.
    pub fn forbidden(error: impl Into<String>) -> Self {
        ApiError {
            status: 403,
            ..Self::access_denied(error)
        }
    }

    /// [`Code::PayloadTooLarge`]: the body is over `limit_bytes`.
    pub fn payload_too_large(limit_bytes: usize) -> Self {
        Self::new(
            Code::PayloadTooLarge,
            "$",
            format!("the request body is larger than the limit of {limit_bytes} bytes"),
        )
    }

    /// [`Code::Unavailable`]: the log cannot accept writes (e.g. the disk is
    /// full), try again later.
    pub fn unavailable(error: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, "$", error)
    }

    /// [`Code::Unexpected`], Hasura's code for a bug.
    pub fn unexpected(error: impl Into<String>) -> Self {
        Self::new(Code::Unexpected, "$", error)
    }

    /// The JSON error body: `{"code","error","path"}`.
    pub fn to_json(&self) -> Value {
        json!({ "code": self.code.as_str(), "error": self.error, "path": self.path })
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}: {}", self.code, self.path, self.error)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_shape() {
        let e = ApiError::parse_failed("$.args.x", "bad");
        assert_eq!(
            e.to_json(),
            json!({"code": "parse-failed", "error": "bad", "path": "$.args.x"})
        );
        assert_eq!(ApiError::access_denied("no").status, 401);
        assert_eq!(ApiError::access_denied("no").code, "access-denied");
        assert_eq!(ApiError::payload_too_large(10).status, 413);
        assert_eq!(ApiError::invalid_json("x").to_json()["code"], "invalid-json");
        assert_eq!(
            ApiError::resource_not_found().to_json(),
            json!({"code": "not-found", "error": "resource does not exist", "path": "$"})
        );
        assert_eq!(ApiError::resource_not_found().status, 404);
        assert_eq!(
            (ApiError::admin_only().status, ApiError::admin_only().path.as_str()),
            (400, "$.args")
        );
        assert_eq!(ApiError::unavailable("disk full").status, 503);
        assert_eq!(ApiError::not_supported("$", "x").code, "not-supported");
        assert_eq!(
            ApiError::validation_failed("$", "x").code,
            "validation-failed"
        );
    }
}
