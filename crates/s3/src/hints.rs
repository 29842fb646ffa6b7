//! Plain-words advice for a failed step of the connection test.
//!
//! [`hint`] turns a step, the error code the store (or Courier, for failures without an
//! answer) reported, and the destination's settings into one or two sentences a customer
//! can act on. The advice follows the troubleshooting section of the Mapping.Travel
//! delivery destinations page. A hint names only the bucket, path prefix, region, endpoint
//! and the *masked* access key id: never the secret.

use courier_core::ErrorCode;
use courier_core::destination::{Credentials, S3Settings, mask_access_key_id};

use crate::probe::ProbeStepName;

/// How a customer replaces credentials that are wrong.
const UPDATE_CREDENTIALS: &str = "Update the destination with fresh credentials using \
                                  PUT /api/v1/delivery-destinations/{id}, then re-run the \
                                  connection test.";

/// Advice for `code` reported by `step`, in terms of the destination `s3`.
pub fn hint(step: ProbeStepName, code: &ErrorCode, s3: &S3Settings) -> String {
    use ErrorCode as C;
    match (step, code) {
        (ProbeStepName::AssumeRole, C::AccessDenied) | (_, C::AssumeRoleFailed) => {
            return role_refused(s3);
        }
        (ProbeStepName::AssumeRole, _) if !code.is_store_side() => {
            return role_failed(code, s3);
        }
        (_, C::RoleAssumableWithoutExternalId) => return confused_deputy(s3),
        (ProbeStepName::AssumeRoleWithoutExternalId, _) if !code.is_store_side() => {
            return role_failed(code, s3);
        }
        (_, C::Other(o)) if o.as_str().starts_with("KMS.") => return kms_refused(code, s3),
        _ => {}
    }
    match code {
        C::PermanentRedirect
        | C::AuthorizationHeaderMalformed
        | C::IllegalLocationConstraintException => wrong_region(s3),
        C::BadRequest if step == ProbeStepName::HeadBucket => head_bad_request(s3),
        C::InvalidAccessKeyId => unknown_key_id(s3),
        C::SignatureDoesNotMatch => wrong_secret(s3),
        C::AccessDenied => access_denied(step, s3),
        C::NoSuchBucket | C::NotFound => missing_bucket(s3),
        C::Timeout | C::ConnectionFailed | C::DispatchFailure => endpoint_silent(code, s3),
        C::EgressRefused => egress_refused(s3),
        C::RequestTimeTooSkewed => clock_skew(),
        C::RequestConstructionFailed if matches!(s3.credentials, Credentials::DefaultChain) => {
            no_default_credentials()
        }
        _ if code.is_store_side() => store_side(code),
        _ => generic(step, code),
    }
}

/// The AWS code a store's answer stands for, for choosing the hint.
///
/// Some S3-compatible stores answer every authentication problem with a plain
/// `AccessDenied` and say what is wrong only in the message: Garage sends
/// `Forbidden: Invalid signature` for a wrong secret and `Forbidden: No such key: GK…` for
/// an unknown key id, where AWS sends `SignatureDoesNotMatch` and `InvalidAccessKeyId`.
/// The report keeps the store's own code; only the advice follows the meaning.
pub fn aws_equivalent(code: &ErrorCode, message: &str) -> ErrorCode {
    if *code != ErrorCode::AccessDenied {
        return code.clone();
    }
    let message = message.to_ascii_lowercase();
    if message.contains("invalid signature") {
        ErrorCode::SignatureDoesNotMatch
    } else if message.contains("no such key:") {
        ErrorCode::InvalidAccessKeyId
    } else {
        code.clone()
    }
}

/// `s3://bucket/prefix`, the place a destination writes to.
pub fn location(s3: &S3Settings) -> String {
    format!("s3://{}/{}", s3.bucket, s3.path_prefix)
}

/// The IAM resource the delivery policy must cover: `arn:aws:s3:::bucket/prefix/*`.
fn resource_arn(s3: &S3Settings) -> String {
    format!("arn:aws:s3:::{}/{}*", s3.bucket, s3.path_prefix)
}

/// Who signs the requests, for sentences like "the credentials AKIA…MPLE".
fn signer(s3: &S3Settings) -> String {
    match &s3.credentials {
        Credentials::Static(c) => {
            format!("the access key `{}`", mask_access_key_id(&c.access_key_id))
        }
        Credentials::Anonymous => "unsigned requests (credentials NONE)".to_owned(),
        Credentials::DefaultChain => "the worker's default AWS credentials".to_owned(),
        Credentials::Role(r) => format!("the role `{}`", r.role_arn),
    }
}

/// How a customer completes a role's trust policy.
const TRUST_POLICY: &str = "Its trust policy must allow sts:AssumeRole to the fleet's principal      (shown as `fleetPrincipal` by GET /api/v1/tenant) with the condition      {\"StringEquals\": {\"sts:ExternalId\": \"<your externalId>\"}}, the externalId      shown by GET /api/v1/tenant and on every destination.";

fn role_refused(s3: &S3Settings) -> String {
    let role = s3.credentials.as_role().map_or_else(
        || "the role".to_owned(),
        |r| format!("the role `{}`", r.role_arn),
    );
    format!(
        "Courier could not assume {role}. AccessDenied here usually means the role's trust          policy lacks the fleet's principal or the ExternalId (or names another one), or          that the role ARN is mistyped. {TRUST_POLICY} Then re-run the connection test."
    )
}

fn role_failed(code: &ErrorCode, s3: &S3Settings) -> String {
    format!(
        "STS refused to let Courier assume {} with {code}. Check that the roleArn is right          and the role exists in your account. {TRUST_POLICY}",
        signer(s3)
    )
}

fn confused_deputy(s3: &S3Settings) -> String {
    format!(
        "Courier could assume {} without the ExternalId: its trust policy does not require          `sts:ExternalId`, so anyone who can make Courier's fleet act (any of its customers)          could have it write with your role, the \"confused deputy\". Add the condition          {{\"StringEquals\": {{\"sts:ExternalId\": \"<your externalId>\"}}}} to the          statement that trusts the fleet's principal, then re-run the connection test.          Courier does not deliver with such a role until it passes.",
        signer(s3)
    )
}

fn kms_refused(code: &ErrorCode, s3: &S3Settings) -> String {
    let key = s3.write.kms_key_id.as_ref().map_or_else(
        || "the bucket's default KMS key".to_owned(),
        |k| format!("the KMS key `{k}`"),
    );
    format!(
        "S3 could not use {key} to encrypt the object ({code}). Check that the key exists in          the bucket's region and is enabled, and that {} may use it: kms:GenerateDataKey and          kms:Decrypt (multipart uploads) in the key policy or the IAM policy.",
        signer(s3)
    )
}

/// The host the requests go to: the endpointUrl, or the AWS endpoint of the region.
fn endpoint(s3: &S3Settings) -> String {
    match &s3.endpoint_url {
        Some(e) => format!("endpointUrl `{e}`"),
        None => format!(
            "the AWS S3 endpoint of region `{}` (s3.{}.amazonaws.com)",
            s3.region, s3.region
        ),
    }
}

fn wrong_region(s3: &S3Settings) -> String {
    let region = &s3.region;
    let compatible = match &s3.endpoint_url {
        Some(e) => format!(
            " For an S3-compatible store, use the region it expects (`auto` for Cloudflare \
             R2, the configured region for MinIO or Garage) and check that endpointUrl `{e}` \
             is the right host."
        ),
        None => String::new(),
    };
    format!(
        "The bucket `{}` is not in the configured region `{region}`. Set the region field to \
         the bucket's actual region (shown in the bucket's properties in the S3 console).\
         {compatible}",
        s3.bucket
    )
}

fn head_bad_request(s3: &S3Settings) -> String {
    format!(
        "The store refused HeadBucket with HTTP 400 and no details (HEAD responses carry no \
         body). On AWS this usually means the region `{}` does not match the bucket's actual \
         region; the PutObject step shows the exact error code.",
        s3.region
    )
}

fn unknown_key_id(s3: &S3Settings) -> String {
    format!(
        "The store does not know {}: it is mistyped, or it was deactivated, deleted or \
         rotated. {UPDATE_CREDENTIALS}",
        signer(s3)
    )
}

fn wrong_secret(s3: &S3Settings) -> String {
    format!(
        "The secretAccessKey does not match {}: it was mistyped or the key pair was rotated. \
         Also check for stray spaces or line breaks copied along with the key. \
         {UPDATE_CREDENTIALS}",
        signer(s3)
    )
}

fn access_denied(step: ProbeStepName, s3: &S3Settings) -> String {
    match step {
        ProbeStepName::HeadBucket => head_not_permitted(s3),
        ProbeStepName::PutObject => permission_missing(step, "write to", s3),
        ProbeStepName::DeleteObject => permission_missing(step, "delete in", s3),
        ProbeStepName::AssumeRole | ProbeStepName::AssumeRoleWithoutExternalId => role_refused(s3),
    }
}

fn head_not_permitted(s3: &S3Settings) -> String {
    let owner = match &s3.write.expected_bucket_owner {
        Some(owner) => format!(
            " With expectedBucketOwner `{owner}` it can also mean that the bucket belongs to \
             another account; the PutObject step then fails with AccessDenied too."
        ),
        None => String::new(),
    };
    format!(
        "HeadBucket was not permitted. On AWS it needs s3:ListBucket on arn:aws:s3:::{}, \
         which the minimal delivery policy does not grant, so this alone is fine: PutObject \
         and DeleteObject show whether Courier can deliver. (A 403 here can also mean wrong \
         credentials; the PutObject step then shows the exact code.){owner}",
        s3.bucket
    )
}

fn permission_missing(step: ProbeStepName, action: &str, s3: &S3Settings) -> String {
    let arn = resource_arn(s3);
    let prefix = if s3.path_prefix.as_str().is_empty() {
        String::new()
    } else {
        format!(
            " Because the destination uses the path prefix `{}`, confirm the Resource ARN \
             ends with `{}*` and covers that prefix.",
            s3.path_prefix, s3.path_prefix
        )
    };
    let anonymous = match s3.credentials {
        Credentials::Anonymous => {
            " Requests are unsigned (credentials NONE), so the bucket itself must allow \
             anonymous writes; otherwise configure STATIC credentials."
        }
        _ => "",
    };
    format!(
        "{} is not allowed to {action} {}. Attach the IAM policy granting s3:PutObject, \
         s3:GetObject and s3:DeleteObject on `{arn}` to the IAM user or role (for an \
         S3-compatible store, give the key read and write access to bucket `{}`).{prefix}\
         {anonymous}{} Then re-run the connection test.",
        capitalize(&signer(s3)),
        location(s3),
        s3.bucket,
        write_options_note(step, s3),
    )
}

/// What the destination's write options add to an AccessDenied of `step`. A PutObject
/// carries the per-object options, which a bucket policy may require or deny: the options
/// it carried are named, and so are the ones the destination does not set (a policy that
/// requires one refuses every PutObject without it). Every request names the expected
/// bucket owner, which a bucket that changed hands refuses.
fn write_options_note(step: ProbeStepName, s3: &S3Settings) -> String {
    use courier_core::write_options::ServerSideEncryption as Sse;
    let w = &s3.write;
    let mut note = String::new();
    if step == ProbeStepName::PutObject {
        let mut sent = Vec::new();
        let mut unset = Vec::new();
        match w.server_side_encryption {
            Some(e) => sent.push(format!("serverSideEncryption `{}`", e.as_str())),
            None => unset.push("serverSideEncryption (`aws:kms` with kmsKeyId for a KMS key)"),
        }
        match &w.kms_key_id {
            Some(k) => sent.push(format!("kmsKeyId `{k}`")),
            None if matches!(
                w.server_side_encryption,
                Some(Sse::AwsKms | Sse::AwsKmsDsse)
            ) =>
            {
                unset.push("kmsKeyId (without it S3 uses the bucket's default key)")
            }
            None => {}
        }
        match w.storage_class {
            Some(c) => sent.push(format!("storageClass `{}`", c.as_str())),
            None => unset.push("storageClass"),
        }
        if w.tags.is_empty() {
            unset.push("tags");
        } else {
            sent.push("tags".to_owned());
        }
        match w.canned_acl {
            Some(a) => sent.push(format!("cannedAcl `{}`", a.as_str())),
            None => unset.push("cannedAcl (e.g. `bucket-owner-full-control`)"),
        }
        if !sent.is_empty() {
            note.push_str(&format!(
                " The request carried {}: a bucket policy may require other values or deny \
                 these (tags need s3:PutObjectTagging, an ACL s3:PutObjectAcl, a KMS key \
                 kms:GenerateDataKey).",
                sent.join(", ")
            ));
        }
        if !unset.is_empty() {
            note.push_str(&format!(
                " A bucket or IAM policy that requires a write option refuses every PutObject \
                 without it; this destination does not set {}. If the policy has such a \
                 condition (s3:x-amz-server-side-encryption, \
                 s3:x-amz-server-side-encryption-aws-kms-key-id, s3:x-amz-storage-class, \
                 s3:RequestObjectTag/…, s3:x-amz-acl), set the option on the destination with \
                 PUT /api/v1/delivery-destinations/{{id}}.",
                unset.join(", ")
            ));
        }
    }
    if let Some(owner) = &w.expected_bucket_owner {
        note.push_str(&format!(
            " Every request names the expected bucket owner `{owner}`: if bucket `{}` \
             belongs to another account, S3 refuses it with AccessDenied.",
            s3.bucket
        ));
    }
    note
}

fn missing_bucket(s3: &S3Settings) -> String {
    let compatible = match &s3.endpoint_url {
        Some(e) => format!(
            "; endpointUrl `{e}` points to the correct host and the bucket exists on that host"
        ),
        None => String::new(),
    };
    format!(
        "The bucket `{}` does not exist in region `{}`. Verify that the bucket name is \
         spelled correctly (S3 bucket names are case-sensitive); that the region field \
         matches the bucket's actual region{compatible}.",
        s3.bucket, s3.region
    )
}

fn egress_refused(s3: &S3Settings) -> String {
    format!(
        "{} leads to a loopback, private or otherwise special-purpose address, which Courier \
         does not connect to on a customer's behalf. Use the store's public endpoint; if the \
         store really is on the operator's network, the operator can allow its address with \
         COURIER_EGRESS_ALLOW.",
        capitalize(&endpoint(s3))
    )
}

fn endpoint_silent(code: &ErrorCode, s3: &S3Settings) -> String {
    let how = match code {
        ErrorCode::ConnectionFailed => "refused or dropped the connection",
        ErrorCode::Timeout => "did not answer in time",
        _ => "could not be reached",
    };
    format!(
        "The endpoint does not answer: {} {how}. Check the endpointUrl, its host and port, \
         that the store is running, and that no firewall or proxy blocks Courier's workers.",
        capitalize(&endpoint(s3))
    )
}

fn clock_skew() -> String {
    "The store rejected the request time: the clocks of Courier's workers and the store \
     differ too much. Check the store's clock (NTP) and re-run the connection test."
        .to_owned()
}

fn no_default_credentials() -> String {
    "Courier could not sign the request: with credentials DEFAULT_CHAIN the worker found no \
     AWS credentials (environment, profile, web identity or instance role). Give the \
     workers credentials, or configure STATIC credentials on the destination."
        .to_owned()
}

fn store_side(code: &ErrorCode) -> String {
    format!(
        "The store reported a problem on its side ({code}); this is not a configuration \
         error. Retry the connection test in a few minutes; if it persists, check the \
         store's status page."
    )
}

fn generic(step: ProbeStepName, code: &ErrorCode) -> String {
    format!(
        "The store refused {step} with {code}. Check the destination's bucket, region, \
         endpointUrl and credentials against the store's documentation for {code}, then \
         re-run the connection test."
    )
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use courier_core::destination::{
        BucketName, EndpointUrl, PathPrefix, Region, Secret, StaticCredentials,
    };

    use super::*;
    use ProbeStepName::{DeleteObject, HeadBucket, PutObject};

    /// The hint for a code given as its text.
    fn hint(step: ProbeStepName, code: &str, s3: &S3Settings) -> String {
        super::hint(step, &ErrorCode::from(code), s3)
    }

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn aws() -> S3Settings {
        S3Settings {
            bucket: BucketName::parse("acme-results").unwrap(),
            region: Region::parse("eu-west-1").unwrap(),
            endpoint_url: None,
            path_prefix: PathPrefix::parse("incoming/").unwrap(),
            credentials: Credentials::Static(StaticCredentials {
                access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
                secret_access_key: Secret::new(SECRET),
            }),
            write: Default::default(),
        }
    }

    fn minio() -> S3Settings {
        S3Settings {
            endpoint_url: Some(EndpointUrl::parse("http://minio.internal:9000").unwrap()),
            ..aws()
        }
    }

    /// Every hint of every family, for the checks that hold for all of them.
    fn all_hints() -> Vec<String> {
        let codes = [
            "PermanentRedirect",
            "AuthorizationHeaderMalformed",
            "IllegalLocationConstraintException",
            "BadRequest",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AccessDenied",
            "NoSuchBucket",
            "NotFound",
            "Timeout",
            "ConnectionFailed",
            "DispatchFailure",
            "RequestTimeTooSkewed",
            "RequestConstructionFailed",
            "SlowDown",
            "Http502",
            "SomethingNew",
        ];
        let mut hints = Vec::new();
        for s3 in [aws(), minio()] {
            for step in [HeadBucket, PutObject, DeleteObject] {
                for code in codes {
                    hints.push(hint(step, code, &s3));
                }
            }
        }
        hints
    }

    #[test]
    fn no_hint_contains_the_secret_or_the_full_key_id() {
        for h in all_hints() {
            assert!(!h.contains(SECRET), "{h}");
            assert!(!h.contains("AKIAIOSFODNN7EXAMPLE"), "{h}");
            assert!(!h.trim().is_empty());
        }
    }

    #[test]
    fn region_errors_name_the_configured_region() {
        for code in [
            "PermanentRedirect",
            "AuthorizationHeaderMalformed",
            "IllegalLocationConstraintException",
        ] {
            let h = hint(PutObject, code, &aws());
            assert!(h.contains("region `eu-west-1`"), "{h}");
            assert!(h.contains("actual region"), "{h}");
        }
        let h = hint(PutObject, "AuthorizationHeaderMalformed", &minio());
        assert!(h.contains("http://minio.internal:9000"), "{h}");
        let h = hint(HeadBucket, "BadRequest", &aws());
        assert!(h.contains("eu-west-1") && h.contains("PutObject"), "{h}");
    }

    #[test]
    fn unknown_key_id_asks_for_fresh_credentials() {
        let h = hint(PutObject, "InvalidAccessKeyId", &aws());
        assert!(h.contains("AKIA…MPLE"), "{h}");
        assert!(h.contains("rotated"), "{h}");
        assert!(h.contains("PUT /api/v1/delivery-destinations/{id}"), "{h}");
    }

    #[test]
    fn wrong_secret_mentions_rotation_and_whitespace() {
        let h = hint(PutObject, "SignatureDoesNotMatch", &aws());
        assert!(h.contains("secretAccessKey does not match"), "{h}");
        assert!(h.contains("stray spaces"), "{h}");
        assert!(h.contains("fresh credentials"), "{h}");
    }

    #[test]
    fn access_denied_on_writes_names_the_exact_resource() {
        let h = hint(PutObject, "AccessDenied", &aws());
        assert!(h.contains("arn:aws:s3:::acme-results/incoming/*"), "{h}");
        assert!(h.contains("s3:PutObject"), "{h}");
        assert!(h.contains("path prefix `incoming/`"), "{h}");
        assert!(h.contains("write to s3://acme-results/incoming/"), "{h}");
        let h = hint(DeleteObject, "AccessDenied", &aws());
        assert!(
            h.contains("delete in") && h.contains("s3:DeleteObject"),
            "{h}"
        );

        let no_prefix = S3Settings {
            path_prefix: PathPrefix::default(),
            ..aws()
        };
        let h = hint(PutObject, "AccessDenied", &no_prefix);
        assert!(h.contains("arn:aws:s3:::acme-results/*"), "{h}");
        assert!(!h.contains("path prefix"), "{h}");

        let anonymous = S3Settings {
            credentials: Credentials::Anonymous,
            ..aws()
        };
        let h = hint(PutObject, "AccessDenied", &anonymous);
        assert!(h.contains("anonymous writes"), "{h}");
    }

    #[test]
    fn access_denied_on_head_bucket_is_explained_as_harmless() {
        let h = hint(HeadBucket, "AccessDenied", &aws());
        assert!(h.contains("s3:ListBucket"), "{h}");
        assert!(h.contains("this alone is fine"), "{h}");
    }

    #[test]
    fn missing_bucket_lists_what_to_verify() {
        for code in ["NoSuchBucket", "NotFound"] {
            let h = hint(HeadBucket, code, &aws());
            assert!(h.contains("bucket `acme-results` does not exist"), "{h}");
            assert!(h.contains("case-sensitive"), "{h}");
            assert!(h.contains("region `eu-west-1`"), "{h}");
        }
        let h = hint(HeadBucket, "NoSuchBucket", &minio());
        assert!(
            h.contains("endpointUrl `http://minio.internal:9000`"),
            "{h}"
        );
    }

    #[test]
    fn silent_endpoints_name_the_endpoint() {
        for code in ["Timeout", "ConnectionFailed", "DispatchFailure"] {
            let h = hint(HeadBucket, code, &minio());
            assert!(h.contains("does not answer"), "{h}");
            assert!(h.contains("http://minio.internal:9000"), "{h}");
            assert!(h.contains("firewall") && h.contains("port"), "{h}");
            let h = hint(HeadBucket, code, &aws());
            assert!(h.contains("s3.eu-west-1.amazonaws.com"), "{h}");
        }
    }

    #[test]
    fn store_side_failures_say_retry_later() {
        for code in ["SlowDown", "InternalError", "ServiceUnavailable", "Http502"] {
            let h = hint(PutObject, code, &aws());
            assert!(h.contains("on its side") && h.contains("Retry"), "{h}");
            assert!(h.contains(code), "{h}");
        }
    }

    #[test]
    fn clock_and_default_chain_problems_have_their_own_advice() {
        assert!(hint(PutObject, "RequestTimeTooSkewed", &aws()).contains("clocks"));
        let chain = S3Settings {
            credentials: Credentials::DefaultChain,
            ..aws()
        };
        let h = hint(HeadBucket, "RequestConstructionFailed", &chain);
        assert!(h.contains("DEFAULT_CHAIN"), "{h}");
    }

    #[test]
    fn garage_style_access_denied_messages_get_the_credentials_hints() {
        let eq = |code: &str, message| aws_equivalent(&code.into(), message).to_string();
        assert_eq!(
            eq("AccessDenied", "Forbidden: Invalid signature"),
            "SignatureDoesNotMatch"
        );
        assert_eq!(
            eq("AccessDenied", "Forbidden: No such key: GK00"),
            "InvalidAccessKeyId"
        );
        assert_eq!(
            eq(
                "AccessDenied",
                "Forbidden: Operation is not allowed for this key."
            ),
            "AccessDenied"
        );
        assert_eq!(eq("AccessDenied", "Access Denied"), "AccessDenied");
        assert_eq!(eq("NoSuchBucket", "Invalid signature"), "NoSuchBucket");
    }

    fn role() -> S3Settings {
        use courier_core::destination::{ExternalId, RoleArn, RoleCredentials};
        S3Settings {
            credentials: Credentials::Role(RoleCredentials {
                role_arn: RoleArn::parse("arn:aws:iam::123456789012:role/courier").unwrap(),
                external_id: ExternalId::parse("abcdefghijklmnopqrstuvwxyz012345").unwrap(),
            }),
            ..aws()
        }
    }

    #[test]
    fn role_failures_point_at_the_trust_policy() {
        use ProbeStepName::{AssumeRole, AssumeRoleWithoutExternalId};
        let h = hint(AssumeRole, "AccessDenied", &role());
        assert!(h.contains("arn:aws:iam::123456789012:role/courier"), "{h}");
        assert!(
            h.contains("trust policy") && h.contains("sts:ExternalId"),
            "{h}"
        );
        assert!(h.contains("GET /api/v1/tenant"), "{h}");
        assert_eq!(hint(PutObject, "AssumeRoleFailed", &role()), h);
        let h = hint(
            AssumeRoleWithoutExternalId,
            "RoleAssumableWithoutExternalId",
            &role(),
        );
        assert!(
            h.contains("confused deputy") && h.contains("sts:ExternalId"),
            "{h}"
        );
        let h = hint(PutObject, "AccessDenied", &role());
        assert!(
            h.contains("The role `arn:aws:iam::123456789012:role/courier`"),
            "{h}"
        );
    }

    #[test]
    fn access_denied_names_the_write_options_sent() {
        use courier_core::write_options::{AccountId, KmsKeyId, ServerSideEncryption};
        let mut s3 = role();
        s3.write.server_side_encryption = Some(ServerSideEncryption::AwsKms);
        s3.write.kms_key_id = Some(KmsKeyId::parse("alias/courier").unwrap());
        s3.write.expected_bucket_owner = Some(AccountId::parse("210987654321").unwrap());
        let h = hint(PutObject, "AccessDenied", &s3);
        assert!(h.contains("serverSideEncryption `aws:kms`"), "{h}");
        assert!(h.contains("kmsKeyId `alias/courier`"), "{h}");
        assert!(h.contains("expected bucket owner `210987654321`"), "{h}");
        let h = hint(PutObject, "KMS.NotFoundException", &s3);
        assert!(h.contains("the KMS key `alias/courier`"), "{h}");
    }

    #[test]
    fn access_denied_on_put_names_the_write_options_not_set() {
        use courier_core::write_options::{CannedAcl, ServerSideEncryption};
        let h = hint(PutObject, "AccessDenied", &role());
        for field in [
            "serverSideEncryption",
            "kmsKeyId",
            "storageClass",
            "tags",
            "cannedAcl",
            "s3:x-amz-server-side-encryption",
        ] {
            assert!(h.contains(field), "{field}: {h}");
        }
        assert!(!h.contains("The request carried"), "{h}");
        let mut s3 = role();
        s3.write.server_side_encryption = Some(ServerSideEncryption::AwsKms);
        s3.write.canned_acl = Some(CannedAcl::BucketOwnerFullControl);
        let h = hint(PutObject, "AccessDenied", &s3);
        assert!(
            h.contains(
                "carried serverSideEncryption `aws:kms`, cannedAcl `bucket-owner-full-control`"
            ),
            "{h}"
        );
        assert!(
            h.contains("does not set kmsKeyId (without it S3 uses the bucket's default key), storageClass, tags."),
            "{h}"
        );
        // DeleteObject carries no write options.
        let h = hint(DeleteObject, "AccessDenied", &s3);
        assert!(
            !h.contains("serverSideEncryption") && !h.contains("storageClass"),
            "{h}"
        );
    }

    #[test]
    fn a_refused_expected_owner_is_named_on_every_step() {
        use courier_core::write_options::AccountId;
        let mut s3 = role();
        s3.write.expected_bucket_owner = Some(AccountId::parse("210987654321").unwrap());
        for step in [HeadBucket, PutObject, DeleteObject] {
            let h = hint(step, "AccessDenied", &s3);
            assert!(
                h.contains("`210987654321`") && h.contains("another account"),
                "{h}"
            );
        }
        let h = hint(HeadBucket, "AccessDenied", &role());
        assert!(!h.contains("another account"), "{h}");
    }

    #[test]
    fn anything_else_gets_generic_advice_with_the_code() {
        let h = hint(PutObject, "InvalidStorageClass", &aws());
        assert!(h.contains("PutObject with InvalidStorageClass"), "{h}");
        assert!(h.contains("re-run the connection test"), "{h}");
    }
}
