// The format tests' names for the shared recording sinks
// (tests/testing/document_sink.h).
#pragma once

#include "testing/document_sink.h"

namespace sluice::formats::testing {

using CollectedDocument = sluice::testing::RecordedDocument;
using CollectingSink = sluice::testing::RecordingSink;
using CollectingErrors = sluice::testing::RecordingErrors;

}  // namespace sluice::formats::testing
