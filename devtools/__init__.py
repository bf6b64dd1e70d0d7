"""Development tooling, not shipped in the image (deploy/Dockerfile.dockerignore): the embedded
backing services of `make run`, `make test` and `make bench` (localservices) and the process
supervisor of `make run` (devrun). Production runs `portal` and the apps, started by the
Procfile's commands or the chart's."""
