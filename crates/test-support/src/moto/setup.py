# Sets up a moto server (its URL is argv[1]) with IAM enforcement still off, and prints what
# the tests need as JSON. Two phases, as in real life:
#
# `fleet`: Courier's operator makes the fleet's identity, allowed only sts:AssumeRole, and an
#   `admin` user (allowed everything) stands for the customer reading objects back.
# `customer EXTERNAL_ID BUCKET PREFIX FLEET_ARN`: the customer, having read their ExternalId
#   from Courier, makes their bucket, a KMS key and two roles trusting the fleet: `role`
#   requires the ExternalId, `openRole` does not. Both may s3:PutObject, s3:GetObject,
#   s3:DeleteObject and s3:AbortMultipartUpload on `BUCKET/PREFIX*` (the README's permissions
#   policy) and use the key; neither may s3:ListBucket.
import json
import sys

import boto3

url, phase = sys.argv[1:3]
root = dict(
    endpoint_url=url,
    region_name="us-east-1",
    aws_access_key_id="AKIAIOSFODNN7SETUP00",
    aws_secret_access_key="setup",
)
iam = boto3.client("iam", **root)


def allow(statements):
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def user(name, actions):
    iam.create_user(UserName=name)
    policy = allow([{"Effect": "Allow", "Action": actions, "Resource": "*"}])
    iam.put_user_policy(UserName=name, PolicyName=name, PolicyDocument=policy)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {
        "arn": iam.get_user(UserName=name)["User"]["Arn"],
        "accessKeyId": key["AccessKeyId"],
        "secretAccessKey": key["SecretAccessKey"],
    }


if phase == "fleet":
    print(json.dumps({"admin": user("admin", "*"), "fleet": user("courier-fleet", "sts:AssumeRole")}))
    sys.exit(0)

external_id, bucket, prefix, fleet_arn = sys.argv[3:7]
boto3.client("s3", **root).create_bucket(Bucket=bucket)
key_arn = boto3.client("kms", **root).create_key(Description="customer key for Courier")[
    "KeyMetadata"
]["Arn"]


def role(name, require_external_id):
    trust = {"Effect": "Allow", "Principal": {"AWS": fleet_arn}, "Action": "sts:AssumeRole"}
    if require_external_id:
        trust["Condition"] = {"StringEquals": {"sts:ExternalId": external_id}}
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=allow([trust]))["Role"]["Arn"]
    permissions = allow(
        [
            {
                "Effect": "Allow",
                "Action": [
                    "s3:PutObject",
                    "s3:GetObject",
                    "s3:DeleteObject",
                    "s3:AbortMultipartUpload",
                ],
                "Resource": f"arn:aws:s3:::{bucket}/{prefix}*",
            },
            {"Effect": "Allow", "Action": ["kms:GenerateDataKey", "kms:Decrypt"], "Resource": key_arn},
        ]
    )
    iam.put_role_policy(RoleName=name, PolicyName="courier-delivery", PolicyDocument=permissions)
    return arn


print(
    json.dumps(
        {
            "role": role("courier-delivery", True),
            "openRole": role("courier-delivery-open", False),
            "kmsKeyArn": key_arn,
        }
    )
)
