//! Bucket CORS configuration (Put/Get/DeleteBucketCors): the rules are checked, then kept as
//! the bucket attribute [`S3_CORS`] in the cluster map, as JSON. What they allow is decided
//! in `crate::cors`.

use s3s::dto::*;
use s3s::{S3Error, S3Request, S3Response, S3Result, s3_error};

use super::S3State;
use super::buckets::{owned, set_attribute};
use crate::cors::{Rule, RulesError, S3_CORS, rules_of, validate};

impl From<RulesError> for S3Error {
    fn from(e: RulesError) -> S3Error {
        if e.is_malformed() {
            s3_error!(MalformedXML, "{e}")
        } else {
            s3_error!(InvalidRequest, "{e}")
        }
    }
}

fn rule_of(rule: &CORSRule) -> Rule {
    Rule {
        origins: rule.allowed_origins.clone(),
        methods: rule.allowed_methods.clone(),
        headers: rule.allowed_headers.clone().unwrap_or_default(),
        expose: rule.expose_headers.clone().unwrap_or_default(),
        max_age_seconds: rule.max_age_seconds,
        id: rule.id.clone(),
    }
}

fn cors_rule_of(rule: Rule) -> CORSRule {
    CORSRule {
        allowed_origins: rule.origins,
        allowed_methods: rule.methods,
        allowed_headers: Some(rule.headers).filter(|h| !h.is_empty()),
        expose_headers: Some(rule.expose).filter(|e| !e.is_empty()),
        max_age_seconds: rule.max_age_seconds,
        id: rule.id,
    }
}

pub async fn put(
    state: &S3State,
    account: &str,
    req: S3Request<PutBucketCorsInput>,
) -> S3Result<S3Response<PutBucketCorsOutput>> {
    let input = req.input;
    owned(state, account, &input.bucket)?;
    let rules: Vec<Rule> = input
        .cors_configuration
        .cors_rules
        .iter()
        .map(rule_of)
        .collect();
    validate(&rules)?;
    let json = serde_json::to_string(&rules).map_err(|e| {
        tracing::error!(error = %e, "CORS rules do not serialize");
        s3_error!(InternalError)
    })?;
    set_attribute(state, &input.bucket, S3_CORS, Some(json)).await?;
    Ok(S3Response::new(PutBucketCorsOutput::default()))
}

pub async fn get(
    state: &S3State,
    account: &str,
    req: S3Request<GetBucketCorsInput>,
) -> S3Result<S3Response<GetBucketCorsOutput>> {
    let bucket = owned(state, account, &req.input.bucket)?;
    let rules = rules_of(&bucket.attributes).ok_or_else(|| {
        s3_error!(
            NoSuchCORSConfiguration,
            "The CORS configuration does not exist"
        )
    })?;
    Ok(S3Response::new(GetBucketCorsOutput {
        cors_rules: Some(rules.into_iter().map(cors_rule_of).collect()),
    }))
}

pub async fn delete(
    state: &S3State,
    account: &str,
    req: S3Request<DeleteBucketCorsInput>,
) -> S3Result<S3Response<DeleteBucketCorsOutput>> {
    owned(state, account, &req.input.bucket)?;
    set_attribute(state, &req.input.bucket, S3_CORS, None).await?;
    Ok(S3Response::with_status(
        DeleteBucketCorsOutput::default(),
        hyper::StatusCode::NO_CONTENT,
    ))
}
