# Runs moto's server (`moto_server` arguments follow) with patches that close the gaps
# between moto 5.2 and AWS that Courier's role and write-option tests depend on. Each patch
# replaces or wraps one moto function; nothing else of moto changes.
#
# 1. Policy conditions evaluate as AWS evaluates them. moto 5.2 knows only StringEquals,
#    evaluates it as true when the request does not carry the key at all (an AssumeRole
#    without ExternalId; AWS: false), ignores every other operator (as if true, so a Deny
#    with StringNotEquals denies everything), pairs keys and values by position, and
#    treats a statement whose condition does not hold as an explicit Deny. Here: the string
#    (and ARN, Bool) operators with their Not, IgnoreCase and IfExists forms, and Null; a
#    key the request lacks makes a positive operator false and a negated one true; a
#    statement whose condition does not hold does not apply. Other operators (numeric,
#    date, IP, ForAnyValue/ForAllValues) are still ignored, as in moto.
# 2. S3 requests carry their condition keys. moto evaluates bucket policies (a statement
#    whose Principal is a string other than "*" is skipped, an {"AWS": …} principal is not
#    checked: a gap left as it is) and identity policies on S3
#    requests without any request context, so a condition on `s3:x-amz-server-side-
#    encryption` could never hold. Here a request's `s3:x-amz-server-side-encryption`,
#    `s3:x-amz-server-side-encryption-aws-kms-key-id`, `s3:x-amz-storage-class`,
#    `s3:x-amz-acl` and `s3:RequestObjectTag/<key>` come from its headers; UploadPart,
#    CompleteMultipartUpload and AbortMultipartUpload carry those of the
#    CreateMultipartUpload that began the upload (so a policy requiring encryption accepts
#    a multipart upload whose create asked for it, as AWS does). The bucket policy is checked under
#    AWS's action names: s3:PutObject for CreateMultipartUpload and CompleteMultipartUpload
#    (moto: s3:PostObject), s3:GetObject for HeadObject (moto: s3:HeadObject),
#    s3:AbortMultipartUpload for AbortMultipartUpload (moto: s3:DeleteObject); and its
#    Deny is answered with AWS's AccessDenied error (moto: an empty 403).
# 3. `x-amz-expected-bucket-owner` is enforced. moto ignores the header; AWS answers 403
#    AccessDenied when it is present and names another account than the bucket's owner.
#
# Every S3 request is also logged as one line `COURIER-S3 {json}` (method, bucket, key,
# query parameter names, the expected bucket owner it named), so a test can check what
# Courier sent (`MotoServer::s3_requests`).
import contextvars
import fnmatch
import json
import sys
from urllib.parse import parse_qs, parse_qsl, urlparse

from moto.iam.access_control import IAMPolicy, IAMPolicyStatement, PermissionResult
from moto.s3 import models as s3_models
from moto.s3 import responses as s3_responses
from moto.s3.exceptions import S3AccessDeniedError

# The condition keys of the S3 request being handled (None outside one).
_s3_context = contextvars.ContextVar("courier_s3_context", default=None)
# The query parameters of the S3 object request being handled.
_s3_query = contextvars.ContextVar("courier_s3_query", default=None)


# 1. Conditions ---------------------------------------------------------------------------

def _equals(expected, actual):
    return actual == expected


def _equals_ignore_case(expected, actual):
    return actual.lower() == expected.lower()


def _like(expected, actual):
    return fnmatch.fnmatchcase(actual, expected)


MATCHERS = {
    "StringEquals": _equals,
    "StringEqualsIgnoreCase": _equals_ignore_case,
    "StringLike": _like,
    "ArnEquals": _like,
    "ArnLike": _like,
    "Bool": _equals_ignore_case,
}
NEGATED = {
    "StringNotEquals": "StringEquals",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringNotLike": "StringLike",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
}


def condition_holds(operator, expected, actual):
    """One operator on one key: `expected` as in the policy, `actual` the request's value
    (None when the request lacks the key). None: an operator this patch does not know."""
    expected = [str(v) for v in (expected if isinstance(expected, list) else [expected])]
    if_exists = operator.endswith("IfExists")
    base = operator[: -len("IfExists")] if if_exists else operator
    if base == "Null":
        return (actual is None) == (expected[0].lower() == "true")
    negated = base in NEGATED
    match = MATCHERS.get(NEGATED.get(base, base))
    if match is None:
        return None
    if actual is None:
        return if_exists or negated
    matched = any(match(e, str(actual)) for e in expected)
    return not matched if negated else matched


def check_conditions_like_aws(self, incoming_condition_values):
    incoming = {k.lower(): v for k, v in (incoming_condition_values or {}).items()}
    for operator, keys in (self._statement.get("Condition") or {}).items():
        for key, expected in keys.items():
            holds = condition_holds(operator, expected, incoming.get(key.lower()))
            if holds is False:
                return False
    return True


_statement_permitted = IAMPolicyStatement.is_action_permitted


def statement_like_aws(self, action, resource="*", principal=None, incoming=None):
    result = _statement_permitted(self, action, resource, principal, incoming)
    if result == PermissionResult.DENIED and not self._check_conditions(incoming):
        # The condition does not hold: the statement does not apply (moto: Deny).
        return PermissionResult.NEUTRAL
    return result


_policy_permitted = IAMPolicy.is_action_permitted


def policy_like_aws(self, action, resource="*", principal=None, incoming=None):
    if incoming is None:
        incoming = _s3_context.get() or {}
    return _policy_permitted(self, action, resource, principal, incoming)


IAMPolicyStatement._check_conditions = check_conditions_like_aws
IAMPolicyStatement.is_action_permitted = statement_like_aws
IAMPolicy.is_action_permitted = policy_like_aws


# 2. S3 request context -------------------------------------------------------------------

WRITE_HEADERS = (
    "x-amz-server-side-encryption",
    "x-amz-server-side-encryption-aws-kms-key-id",
    "x-amz-storage-class",
    "x-amz-acl",
)


def s3_context(headers):
    context = {}
    for header in WRITE_HEADERS:
        value = headers.get(header)
        if value is not None:
            context[f"s3:{header}"] = value
    for key, value in parse_qsl(headers.get("x-amz-tagging") or "", keep_blank_values=True):
        context[f"s3:RequestObjectTag/{key}"] = value
    return context


_multipart_init = s3_models.FakeMultipart.__init__


def multipart_init(self, *args, **kwargs):
    _multipart_init(self, *args, **kwargs)
    # The CreateMultipartUpload's condition keys, for the upload's later requests.
    self.courier_context = _s3_context.get() or {}


s3_models.FakeMultipart.__init__ = multipart_init

_get_permission = s3_models.FakeBucket.get_permission


def get_permission_like_aws(self, action, resource):
    query = _s3_query.get() or {}
    if action == "s3:PostObject" and ("uploads" in query or "uploadId" in query):
        action = "s3:PutObject"
    elif action == "s3:HeadObject":
        action = "s3:GetObject"
    elif action == "s3:DeleteObject" and "uploadId" in query:
        action = "s3:AbortMultipartUpload"
    return _get_permission(self, action, resource)


s3_models.FakeBucket.get_permission = get_permission_like_aws


# 3. Expected bucket owner, and the request log --------------------------------------------

def handled_like_aws(original, is_key):
    def handle(self, request, full_url):
        query = parse_qs(urlparse(full_url).query, keep_blank_values=True)
        bucket_name = self.parse_bucket_name_from_url(request, full_url)
        owner = request.headers.get("x-amz-expected-bucket-owner")
        entry = {
            "method": request.method,
            "bucket": bucket_name,
            "key": self.parse_key_name() if is_key else None,
            "query": sorted(query),
            "expectedBucketOwner": owner,
        }
        # One write, so that lines of concurrent requests do not interleave.
        sys.stdout.write("COURIER-S3 " + json.dumps(entry) + "\n")
        sys.stdout.flush()
        bucket = self.backend.buckets.get(bucket_name) if bucket_name else None
        if owner is not None and bucket is not None and bucket.account_id != owner:
            raise S3AccessDeniedError()
        context = s3_context(request.headers)
        upload_id = (query.get("uploadId") or [None])[0]
        if upload_id and bucket is not None and upload_id in bucket.multiparts:
            context = getattr(bucket.multiparts[upload_id], "courier_context", context)
        context_token = _s3_context.set(context)
        query_token = _s3_query.set(query)
        try:
            response = original(self, request, full_url)
        finally:
            _s3_context.reset(context_token)
            _s3_query.reset(query_token)
        if isinstance(response, tuple) and response[0] == 403 and not response[2]:
            # A bucket policy's Deny: moto answers an empty 403, AWS an AccessDenied error.
            raise S3AccessDeniedError()
        return response

    return handle


s3_responses.S3Response._bucket_response = handled_like_aws(
    s3_responses.S3Response._bucket_response, False
)
s3_responses.S3Response._key_response = handled_like_aws(
    s3_responses.S3Response._key_response, True
)

from moto.server import main  # noqa: E402

main(sys.argv[1:])
