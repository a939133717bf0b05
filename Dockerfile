# Builds the one binary; the same image runs any role (`serve --roles ...`) or `migrate`.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/chatbotd ./cmd/chatbotd

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/chatbotd /usr/local/bin/chatbotd
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/chatbotd"]
CMD ["serve"]
