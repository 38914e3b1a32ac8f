# The stream worker image (also runs replay, bench, evaluate). No torch: training is an extra.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY stream_app ./stream_app
COPY schemas ./schemas
COPY models/stream_app_train ./models/stream_app_train
# the versions the suite was run with (constraints.txt), not whatever is newest on the day of the build
RUN pip install --no-cache-dir -c constraints.txt .
# `stream-app evaluate` writes its reports to ./reports by default: a folder the user below can write
RUN mkdir -p /app/reports && chown nobody /app/reports
USER nobody
ENV STREAM_APP_STATE_DIR=/tmp/stream-app
# the worker's /metrics, /healthz and /readyz (docs/operations.md)
EXPOSE 6066
CMD ["stream-app", "worker", "--web-port", "6066"]
