// Package schemas holds the JSON Schemas of Vigil's messages.
//
// Every Vigil message is a CloudEvent whose data is JSON; each data type has
// one JSON Schema (draft 2020-12) in this directory, named after the type and
// its version, such as observation.v1.json. Files returns them all, and
// ForType names the schema of a CloudEvents type.
//
// The schemas are strict: every object rejects properties it does not name,
// and every field Vigil always writes is required, so a field renamed in Go or
// in a schema fails the package's tests.
//
// Each file is self-contained but one: check_batch.v1.json takes its commands
// from check_command.v1.json by a $ref relative to its $id. A validator that
// resolves it must know every file under its $id, BaseURI followed by the
// file name; nothing refers outside this directory.
package schemas
