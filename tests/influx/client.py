"""Writes points to pulse-metrics with the official InfluxDB 2.x Python client
(influxdb-client on PyPI), exactly as a user's script would.

usage: client.py URL TOKEN BUCKET UNIX_SECONDS
"""

import sys

from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS


def main():
    url, token, bucket, ts = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    with InfluxDBClient(url=url, token=token, org="home") as client:
        api = client.write_api(write_options=SYNCHRONOUS)
        # Point objects: an integer field (40i), a tag value that needs escaping.
        api.write(
            bucket=bucket,
            record=[
                Point("room")
                .tag("sensor", "kitchen")
                .field("temperature", 21.5)
                .field("humidity", 40)
                .time(ts, WritePrecision.S),
                Point("room")
                .tag("sensor", "living room, north")
                .field("temperature", 19.25)
                .time(ts, WritePrecision.S),
            ],
            write_precision=WritePrecision.S,
        )
        # Raw line protocol in milliseconds.
        api.write(
            bucket=bucket,
            record="room,sensor=kitchen temperature=22.5 %d" % ((ts + 10) * 1000),
            write_precision=WritePrecision.MS,
        )
        # A dictionary with a boolean and a string field, nanoseconds.
        api.write(
            bucket=bucket,
            record={
                "measurement": "ups",
                "tags": {"host": "nas"},
                "fields": {"load": 12.0, "online": True, "model": "X-1500"},
                "time": ts * 10**9,
            },
        )
    # The same client with gzip-compressed bodies.
    with InfluxDBClient(url=url, token=token, org="home", enable_gzip=True) as client:
        api = client.write_api(write_options=SYNCHRONOUS)
        api.write(
            bucket=bucket,
            record=Point("ups").tag("host", "nas").field("load", 14.5).time(ts + 10, WritePrecision.S),
            write_precision=WritePrecision.S,
        )
    print("ok")


if __name__ == "__main__":
    main()
