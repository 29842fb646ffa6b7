# Runs moto's server (`moto_server` arguments follow) with one patch that makes its trust
# policy conditions evaluate as AWS does.
#
# moto 5.2 evaluates a condition such as {"StringEquals": {"sts:ExternalId": "x"}} as true
# when the request does not carry the key at all (an AssumeRole without ExternalId); AWS
# evaluates it as false. Without this, a role that requires an ExternalId would look
# assumable without it, and the connection test's confused-deputy check could not be tested.
import sys

from moto.iam import policy_conditions

_verify = policy_conditions.TrustCondition.verify_condition


def verify_like_aws(self, actual_values):
    if len(actual_values) < len(self.context_keys):
        return False
    return _verify(self, actual_values)


policy_conditions.TrustCondition.verify_condition = verify_like_aws

from moto.server import main  # noqa: E402

main(sys.argv[1:])
