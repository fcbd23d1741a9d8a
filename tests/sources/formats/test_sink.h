// The format tests' names for the shared recording sinks
// (tests/testing/document_sink.h).
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "sluice/parser.h"
#include "testing/document_sink.h"

namespace sluice::formats::testing {

using CollectedDocument = sluice::testing::RecordedDocument;
using CollectingSink = sluice::testing::RecordingSink;
using CollectingErrors = sluice::testing::RecordingErrors;

// The reader hands a small file's bytes to the parser (SourceFile::contents)
// instead of letting it open the file again: `parser` must parse `bytes`
// given that way, with its path pointing nowhere, exactly as it parses the
// same bytes written to a file in `dir`.
inline void ExpectSameParseFromContents(const Parser& parser, const std::string& dir,
                                        const std::string& name, const std::string& bytes) {
  const std::string path = dir + "/" + name;
  {
    std::ofstream out(path, std::ios::binary);
    out << bytes;
  }
  SourceFile from_path;
  from_path.path = path;
  from_path.relative_path = name;
  from_path.size_bytes = bytes.size();
  SourceFile from_memory = from_path;
  from_memory.path = dir + "/no-such-file-" + name;  // opening it would fail
  from_memory.contents = bytes;
  CollectingSink file_sink, memory_sink;
  CollectingErrors errors;
  ParseStats stats;
  const Status file_status = parser.Parse(from_path, ParseLimits{}, file_sink, errors, stats);
  const Status memory_status = parser.Parse(from_memory, ParseLimits{}, memory_sink, errors, stats);
  ASSERT_TRUE(file_status.ok()) << file_status.ToString();
  ASSERT_TRUE(memory_status.ok()) << memory_status.ToString();
  ASSERT_EQ(memory_sink.docs.size(), file_sink.docs.size());
  ASSERT_FALSE(file_sink.docs.empty());
  EXPECT_FALSE(file_sink.AllText().empty());
  EXPECT_EQ(memory_sink.AllText(), file_sink.AllText());
  for (size_t i = 0; i < file_sink.docs.size(); ++i) {
    EXPECT_EQ(memory_sink.docs[i].info.title, file_sink.docs[i].info.title);
    EXPECT_EQ(memory_sink.docs[i].info.metadata_json, file_sink.docs[i].info.metadata_json);
    EXPECT_EQ(memory_sink.docs[i].blocks.size(), file_sink.docs[i].blocks.size());
  }
}

}  // namespace sluice::formats::testing
