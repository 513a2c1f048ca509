module tenantdb/driver-tests

go 1.26.8

require github.com/tursodatabase/libsql-client-go v0.0.0-20260528064733-9d5d30a29a60 // indirect
