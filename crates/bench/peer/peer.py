"""The bench's peer: what a user would write instead of Courier.

A Celery app on Redis whose one task renders a result's rows as CSV with Python's csv module
and uploads the file with boto3, run by `courier-bench` as
`celery -A peer worker --pool=prefork --concurrency=4`, with late acknowledgement (a task
is acknowledged after its upload, as Courier acknowledges a delivery after it is stored).

    python peer.py enqueue     # fills the queue with PEER_DELIVERIES tasks, then exits

Settings come from the environment: PEER_REDIS_URL, PEER_S3_ENDPOINT, PEER_S3_REGION,
PEER_S3_ACCESS_KEY_ID, PEER_S3_SECRET_ACCESS_KEY, PEER_BUCKET, PEER_PREFIX, and for
`enqueue` PEER_DELIVERIES and PEER_ROWS. The worker sets the Redis key `peer:ready` when it
is ready and counts finished uploads in `peer:done`: one INCR per task, all the bench reads.
"""

import csv
import io
import os
import sys

import boto3
import redis
from botocore.config import Config
from celery import Celery
from celery.signals import worker_process_init, worker_ready

from rows import COLUMNS, row

REDIS_URL = os.environ["PEER_REDIS_URL"]
QUEUE = "peer"

app = Celery("peer", broker=REDIS_URL)
app.conf.update(
    task_acks_late=True,
    task_ignore_result=True,
    task_default_queue=QUEUE,
    task_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)

_s3 = None
_redis = None


@worker_process_init.connect
def _connect(**_):
    """One S3 client and one Redis connection per pool process."""
    global _s3, _redis
    _s3 = boto3.client(
        "s3",
        endpoint_url=os.environ["PEER_S3_ENDPOINT"],
        region_name=os.environ["PEER_S3_REGION"],
        aws_access_key_id=os.environ["PEER_S3_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["PEER_S3_SECRET_ACCESS_KEY"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )
    _redis = redis.Redis.from_url(REDIS_URL)


@worker_ready.connect
def _ready(**_):
    redis.Redis.from_url(REDIS_URL).set("peer:ready", 1)


@app.task(name="peer.deliver")
def deliver(job):
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for r in job["rows"]:
        writer.writerow([r.get(c) for c in COLUMNS])
    key = f"{os.environ['PEER_PREFIX']}{job['jobId']}.csv"
    _s3.put_object(
        Bucket=os.environ["PEER_BUCKET"],
        Key=key,
        Body=out.getvalue().encode(),
        ContentType="text/csv",
    )
    _redis.incr("peer:done")


def enqueue():
    n = int(os.environ["PEER_DELIVERIES"])
    rows = [row(i) for i in range(int(os.environ["PEER_ROWS"]))]
    with app.producer_or_acquire() as producer:
        for i in range(n):
            deliver.apply_async(
                args=[{"jobId": f"peer-{i}", "rows": rows}], producer=producer
            )


if __name__ == "__main__":
    if sys.argv[1:] == ["enqueue"]:
        enqueue()
    else:
        sys.exit(f"usage: {sys.argv[0]} enqueue")
