#include "sources/formats/xml_util.h"

#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "common/utf8.h"
#include "sources/formats/format_util.h"

namespace sluice::formats {

std::string_view LocalName(const char* qualified_name) {
  std::string_view name(qualified_name);
  const size_t colon = name.rfind(':');
  return colon == std::string_view::npos ? name : name.substr(colon + 1);
}

pugi::xml_node ChildByLocalName(pugi::xml_node node, std::string_view name) {
  for (pugi::xml_node child = node.first_child(); child; child = child.next_sibling()) {
    if (child.type() == pugi::node_element && LocalName(child.name()) == name) return child;
  }
  return pugi::xml_node();
}

pugi::xml_node DescendantByLocalName(pugi::xml_node node, std::string_view name) {
  std::vector<pugi::xml_node> stack;
  for (pugi::xml_node child = node.last_child(); child; child = child.previous_sibling()) {
    stack.push_back(child);
  }
  while (!stack.empty()) {
    pugi::xml_node current = stack.back();
    stack.pop_back();
    if (current.type() != pugi::node_element) continue;
    if (LocalName(current.name()) == name) return current;
    for (pugi::xml_node child = current.last_child(); child; child = child.previous_sibling()) {
      stack.push_back(child);
    }
  }
  return pugi::xml_node();
}

pugi::xml_attribute AttributeByLocalName(pugi::xml_node node, std::string_view name) {
  for (pugi::xml_attribute attr = node.first_attribute(); attr; attr = attr.next_attribute()) {
    if (LocalName(attr.name()) == name) return attr;
  }
  return pugi::xml_attribute();
}

std::string CollapsedXmlText(pugi::xml_node node) {
  std::string out;
  std::vector<pugi::xml_node> stack{node};
  while (!stack.empty()) {
    pugi::xml_node current = stack.back();
    stack.pop_back();
    if (current.type() == pugi::node_pcdata || current.type() == pugi::node_cdata) {
      AppendCollapsed(current.value(), out);
      continue;
    }
    for (pugi::xml_node child = current.last_child(); child; child = child.previous_sibling()) {
      stack.push_back(child);
    }
  }
  std::string repaired;
  AppendRepairedUtf8(TrimAscii(out), repaired);
  return repaired;
}

Status ParseXml(std::string_view xml, unsigned options, const std::string& archive,
                const std::string& member, pugi::xml_document& doc) {
  const pugi::xml_parse_result result =
      doc.load_buffer(xml.data(), xml.size(), options, pugi::encoding_auto);
  if (!result) {
    return Status::Corrupt(fmt::format("{}: malformed XML in {}: {} at offset {}", archive, member,
                                       result.description(),
                                       static_cast<long long>(result.offset)));
  }
  return Status::OK();
}

}  // namespace sluice::formats
