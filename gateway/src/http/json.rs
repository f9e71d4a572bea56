//! `JsonBody<T>`: the one extractor of JSON request bodies. Every refusal is an [`ApiError`]:
//! a body that is not JSON, or JSON but not an object, is 400 `validation_failed` on the field
//! `body`; a body over the size limit (axum's default) is 413 `payload_too_large`; a body that does
//! not arrive within the listener's HTTP timeout is 408 `request_timeout`. The
//! `Content-Type` is not checked: clients that send JSON without `application/json` have always
//! been served.
//!
//! `T` is a loose wire type: any object reads into it, and the domain turns it into a typed request,
//! reporting every problem at once.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::Value;

use herald_contract::defaults;

use crate::error::Error;
use crate::listener::BodyTimeout;

use super::ApiError;

pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        // The listener's deadline for the body (a body trickled in byte by byte would otherwise
        // hold the request, and its buffer, for as long as the sender likes).
        let deadline = request
            .extensions()
            .get::<BodyTimeout>()
            .map_or(Duration::from_secs(defaults::HTTP_TIMEOUT_SECONDS), |t| t.0);
        let read = tokio::time::timeout(deadline, Bytes::from_request(request, state))
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "the request body did not arrive in time",
                )
            })?;
        let bytes = read.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the request body is too large",
                )
            } else {
                Error::BadRequest("the request body could not be read".into()).into()
            }
        })?;
        // JSON first, `T` second: a syntax error reads "not JSON" whatever `T` is.
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| Error::invalid("body", format!("not JSON: {e}")))?;
        if !value.is_object() {
            return Err(Error::invalid("body", "must be a JSON object").into());
        }
        let body = T::deserialize(value).map_err(|e| Error::invalid("body", e.to_string()))?;
        Ok(JsonBody(body))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use axum::body::Body;
    use axum::response::IntoResponse;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Loose {
        #[serde(flatten)]
        fields: BTreeMap<String, Value>,
    }

    async fn extract(body: impl Into<Body>) -> Result<Value, (StatusCode, Value)> {
        let request = Request::post("/").body(body.into()).expect("request");
        match JsonBody::<Loose>::from_request(request, &()).await {
            Ok(JsonBody(loose)) => Ok(serde_json::to_value(loose.fields).expect("json")),
            Err(rejection) => {
                let response = rejection.into_response();
                let status = response.status();
                let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                    .await
                    .expect("body");
                Err((status, serde_json::from_slice(&bytes).expect("a JSON error")))
            }
        }
    }

    #[tokio::test]
    async fn reads_an_object_without_a_content_type() {
        assert_eq!(extract(r#"{"a": 1}"#).await.expect("read"), serde_json::json!({"a": 1}));
    }

    #[tokio::test]
    async fn refusals_are_api_errors() {
        let (status, error) = extract("{").await.expect_err("not JSON");
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(error["error"]["code"], "validation_failed");
        assert!(
            error["error"]["fields"]["body"]
                .as_str()
                .is_some_and(|m| m.starts_with("not JSON: ")),
            "{error}"
        );

        let (status, error) = extract("[1]").await.expect_err("not an object");
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(error["error"]["fields"]["body"], "must be a JSON object");

        let (status, error) = extract(vec![b' '; 3 * 1024 * 1024]).await.expect_err("too large");
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(error["error"]["code"], "payload_too_large");
    }
}
