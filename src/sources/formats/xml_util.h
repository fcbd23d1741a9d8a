// Small pugixml helpers shared by the EPUB and DOCX parsers: namespace-prefix
// agnostic lookups (OPF and OOXML files use varying prefixes) and parsing with
// an error that names the member and the offset.
//
// Thread safety: pure functions.
#pragma once

#include <string>
#include <string_view>

#include <pugixml.hpp>

#include "sluice/status.h"

namespace sluice::formats {

// "dc:title" -> "title".
std::string_view LocalName(const char* qualified_name);

// First child element of `node` with local name `name` (empty handle if none).
pugi::xml_node ChildByLocalName(pugi::xml_node node, std::string_view name);

// First element in document order under `node` (depth-first, iterative) with
// local name `name`.
pugi::xml_node DescendantByLocalName(pugi::xml_node node, std::string_view name);

// Attribute by local name ("w:val" and "val" both match "val").
pugi::xml_attribute AttributeByLocalName(pugi::xml_node node, std::string_view name);

// All text under `node`, whitespace collapsed and trimmed.
std::string CollapsedXmlText(pugi::xml_node node);

// Parses `xml` into `doc`. Corrupt("<archive>: malformed XML in <member>: <why>
// at offset N") on failure.
Status ParseXml(std::string_view xml, unsigned options, const std::string& archive,
                const std::string& member, pugi::xml_document& doc);

}  // namespace sluice::formats
