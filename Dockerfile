# The gateway image that `modelyard deploy k8s` references (default tag modelyard:<version>):
#   docker build -t modelyard:0.1.0 .
# Not built in CI (these machines have no Docker engine).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . && useradd --uid 10001 --no-create-home modelyard
USER 10001
EXPOSE 8080
ENTRYPOINT ["modelyard"]
CMD ["gateway", "/etc/modelyard/fleet.yaml", "--host", "0.0.0.0", "--port", "8080"]
