# The image the Helm chart runs: the controller (`args: [controller]`) and the serving Deployment it
# manages (`args: [serve]`) are this one binary; `ztpctl` comes along for `kubectl exec`.
#
#   docker build -t ghcr.io/netops/ztp-operator:0.1.0 .
#
# Not built by the test suite (the machines it runs on have no container engine).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin ztp-operator --bin ztpctl

# glibc + CA certificates (rustls reads the system roots), no shell, non-root 65532 as the chart.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/ztp-operator /src/target/release/ztpctl /usr/local/bin/
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/ztp-operator"]
