// One canonical text per JSON value, so metadata reads back byte-identical
// from every store: PostgreSQL's jsonb keeps the value but not the text (it
// reorders keys and re-spaces), and the aggregate files must not depend on
// which store a chunk was replayed from (docs/RESUME.md).
//
// Canonical form: no whitespace; object keys sorted bytewise, recursively
// (a repeated key keeps its last value, as jsonb does); strings escaped by
// AppendJsonString; integers as written, other numbers in the shortest form
// that reads back as the same double. Canonical(jsonb's output of
// Canonical(x)) == Canonical(x).
//
// Thread safety: thread-safe (a parser per thread).
#pragma once

#include <string>
#include <string_view>

#include "sluice/status.h"

namespace sluice {

// InvalidArgument when `json` is not one valid JSON value.
Result<std::string> CanonicalJson(std::string_view json);

}  // namespace sluice
