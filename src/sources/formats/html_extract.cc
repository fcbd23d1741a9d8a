#include "sources/formats/html_extract.h"

#include <gumbo.h>
#include <strings.h>

#include <algorithm>
#include <vector>

#include "common/utf8.h"
#include "sources/formats/format_util.h"

namespace sluice::formats {
namespace {

enum class TagRole {
  kInline,    // text flows through
  kSkip,      // subtree dropped
  kBlock,     // paragraph boundary; inherits the enclosing block kind
  kHeading,   // h1..h6
  kCode,      // pre and friends
  kListItem,  // li, dt, dd
  kRow,       // tr
  kCell,      // td, th
  kBreak,     // br
};

TagRole RoleOf(GumboTag tag) {
  switch (tag) {
    case GUMBO_TAG_SCRIPT:
    case GUMBO_TAG_STYLE:
    case GUMBO_TAG_NAV:
    case GUMBO_TAG_NOSCRIPT:
    case GUMBO_TAG_TEMPLATE:
    case GUMBO_TAG_HEAD:
    case GUMBO_TAG_SVG:
    case GUMBO_TAG_MATH:
    case GUMBO_TAG_IFRAME:
    case GUMBO_TAG_OBJECT:
    case GUMBO_TAG_SELECT:
    case GUMBO_TAG_TITLE:
      return TagRole::kSkip;
    case GUMBO_TAG_H1:
    case GUMBO_TAG_H2:
    case GUMBO_TAG_H3:
    case GUMBO_TAG_H4:
    case GUMBO_TAG_H5:
    case GUMBO_TAG_H6:
      return TagRole::kHeading;
    case GUMBO_TAG_PRE:
    case GUMBO_TAG_LISTING:
    case GUMBO_TAG_XMP:
    case GUMBO_TAG_PLAINTEXT:
      return TagRole::kCode;
    case GUMBO_TAG_LI:
    case GUMBO_TAG_DT:
    case GUMBO_TAG_DD:
      return TagRole::kListItem;
    case GUMBO_TAG_TR:
      return TagRole::kRow;
    case GUMBO_TAG_TD:
    case GUMBO_TAG_TH:
      return TagRole::kCell;
    case GUMBO_TAG_BR:
      return TagRole::kBreak;
    case GUMBO_TAG_HTML:
    case GUMBO_TAG_BODY:
    case GUMBO_TAG_P:
    case GUMBO_TAG_DIV:
    case GUMBO_TAG_SECTION:
    case GUMBO_TAG_ARTICLE:
    case GUMBO_TAG_MAIN:
    case GUMBO_TAG_HEADER:
    case GUMBO_TAG_FOOTER:
    case GUMBO_TAG_ASIDE:
    case GUMBO_TAG_BLOCKQUOTE:
    case GUMBO_TAG_FIGURE:
    case GUMBO_TAG_FIGCAPTION:
    case GUMBO_TAG_ADDRESS:
    case GUMBO_TAG_UL:
    case GUMBO_TAG_OL:
    case GUMBO_TAG_DL:
    case GUMBO_TAG_TABLE:
    case GUMBO_TAG_THEAD:
    case GUMBO_TAG_TBODY:
    case GUMBO_TAG_TFOOT:
    case GUMBO_TAG_CAPTION:
    case GUMBO_TAG_FORM:
    case GUMBO_TAG_FIELDSET:
    case GUMBO_TAG_LEGEND:
    case GUMBO_TAG_DETAILS:
    case GUMBO_TAG_SUMMARY:
    case GUMBO_TAG_HR:
    case GUMBO_TAG_CENTER:
    case GUMBO_TAG_HGROUP:
    case GUMBO_TAG_MENU:
    case GUMBO_TAG_DIR:
      return TagRole::kBlock;
    default:
      return TagRole::kInline;
  }
}

int HeadingLevel(GumboTag tag) {
  switch (tag) {
    case GUMBO_TAG_H1:
      return 1;
    case GUMBO_TAG_H2:
      return 2;
    case GUMBO_TAG_H3:
      return 3;
    case GUMBO_TAG_H4:
      return 4;
    case GUMBO_TAG_H5:
      return 5;
    default:
      return 6;
  }
}

const GumboVector* ChildrenOf(const GumboNode* node) {
  if (node->type == GUMBO_NODE_DOCUMENT) return &node->v.document.children;
  if (node->type == GUMBO_NODE_ELEMENT) return &node->v.element.children;
  return nullptr;  // text nodes and templates (whose content is dropped)
}

// Text of a subtree, whitespace collapsed (for <title>).
std::string CollapsedText(const GumboNode* root) {
  std::string out;
  std::vector<const GumboNode*> stack{root};
  while (!stack.empty()) {
    const GumboNode* node = stack.back();
    stack.pop_back();
    if (node->type == GUMBO_NODE_TEXT || node->type == GUMBO_NODE_WHITESPACE ||
        node->type == GUMBO_NODE_CDATA) {
      AppendCollapsed(node->v.text.text, out);
      continue;
    }
    const GumboVector* children = ChildrenOf(node);
    if (children == nullptr) continue;
    for (unsigned i = children->length; i > 0; --i) {
      stack.push_back(static_cast<const GumboNode*>(children->data[i - 1]));
    }
  }
  return std::string(TrimAscii(out));
}

// Walks the body and turns it into blocks; see the header for the rules.
class BlockWalker {
 public:
  BlockWalker(const HtmlDocument::EmitFn& emit, int page) : emit_(emit), page_(page) {}

  Status Walk(const GumboNode* root) {
    struct Frame {
      const GumboNode* node;
      unsigned next_child;
      TagRole role;
    };
    std::vector<Frame> stack;
    Status st = Enter(root, stack.empty());
    if (!st.ok()) return st;
    stack.push_back({root, 0, Role(root)});
    while (!stack.empty()) {
      Frame& top = stack.back();
      const GumboVector* children = ChildrenOf(top.node);
      if (top.role == TagRole::kSkip || children == nullptr || top.next_child >= children->length) {
        const Frame done = top;
        stack.pop_back();
        st = Exit(done.node, done.role);
        if (!st.ok()) return st;
        continue;
      }
      const auto* child = static_cast<const GumboNode*>(children->data[top.next_child++]);
      switch (child->type) {
        case GUMBO_NODE_TEXT:
        case GUMBO_NODE_CDATA:
        case GUMBO_NODE_WHITESPACE:
          AddText(child->v.text.text);
          break;
        case GUMBO_NODE_ELEMENT: {
          const TagRole role = Role(child);
          if (role == TagRole::kSkip) break;
          st = Enter(child, false);
          if (!st.ok()) return st;
          stack.push_back({child, 0, role});
          break;
        }
        default:  // comments, templates, documents
          break;
      }
    }
    return Flush();
  }

 private:
  struct Context {
    BlockKind kind;
    int level;
  };

  static TagRole Role(const GumboNode* node) {
    if (node->type == GUMBO_NODE_DOCUMENT) return TagRole::kBlock;
    if (node->type != GUMBO_NODE_ELEMENT) return TagRole::kInline;
    return RoleOf(node->v.element.tag);
  }

  bool InCell() const { return cell_depth_ > 0; }

  Status Enter(const GumboNode* node, bool /*is_root*/) {
    const TagRole role = Role(node);
    if (InCell()) {
      // Inside a table cell, structure collapses to spaces so the row stays one line.
      if (role != TagRole::kInline && role != TagRole::kCell) AppendSeparator(' ');
      if (role == TagRole::kCell) ++cell_depth_;
      if (role == TagRole::kCode) ++pre_depth_;
      return Status::OK();
    }
    switch (role) {
      case TagRole::kInline:
      case TagRole::kSkip:
        return Status::OK();
      case TagRole::kBreak:
        buf_.push_back('\n');
        return Status::OK();
      case TagRole::kRow: {
        Status st = Flush();
        row_.clear();
        ++row_depth_;
        return st;
      }
      case TagRole::kCell: {
        Status st = Flush();
        if (row_depth_ > 0) {
          ++cell_depth_;
        } else {
          contexts_.push_back(Current());
        }
        return st;
      }
      case TagRole::kHeading: {
        Status st = Flush();
        contexts_.push_back({BlockKind::kHeading, HeadingLevel(node->v.element.tag)});
        return st;
      }
      case TagRole::kCode: {
        Status st = Flush();
        contexts_.push_back({BlockKind::kCode, 0});
        ++pre_depth_;
        return st;
      }
      case TagRole::kListItem: {
        Status st = Flush();
        contexts_.push_back({BlockKind::kListItem, 0});
        return st;
      }
      case TagRole::kBlock: {
        Status st = Flush();
        contexts_.push_back(Current());
        return st;
      }
    }
    return Status::OK();
  }

  Status Exit(const GumboNode* node, TagRole role) {
    (void)node;
    if (InCell()) {
      if (role == TagRole::kCode) --pre_depth_;
      if (role == TagRole::kCell) {
        if (--cell_depth_ == 0) {
          row_.emplace_back(TrimAscii(buf_));
          buf_.clear();
        }
      } else if (role != TagRole::kInline) {
        AppendSeparator(' ');
      }
      return Status::OK();
    }
    switch (role) {
      case TagRole::kInline:
      case TagRole::kSkip:
      case TagRole::kBreak:
        return Status::OK();
      case TagRole::kRow: {
        Status st = Flush();
        if (!st.ok()) return st;
        --row_depth_;
        return EmitRow();
      }
      case TagRole::kCell:  // a cell outside any row: plain block
      case TagRole::kHeading:
      case TagRole::kListItem:
      case TagRole::kBlock: {
        Status st = Flush();
        if (!contexts_.empty()) contexts_.pop_back();
        return st;
      }
      case TagRole::kCode: {
        Status st = Flush();
        if (!contexts_.empty()) contexts_.pop_back();
        --pre_depth_;
        return st;
      }
    }
    return Status::OK();
  }

  Context Current() const {
    return contexts_.empty() ? Context{BlockKind::kParagraph, 0} : contexts_.back();
  }

  void AppendSeparator(char c) {
    if (!buf_.empty() && buf_.back() != ' ' && buf_.back() != '\n') buf_.push_back(c);
  }

  void AddText(const char* text) {
    if (pre_depth_ > 0 && !InCell()) {
      buf_.append(text);
    } else {
      AppendCollapsed(text, buf_);
    }
  }

  Status EmitRow() {
    bool any = false;
    for (const std::string& cell : row_) any = any || !cell.empty();
    if (!any) {
      row_.clear();
      return Status::OK();
    }
    TextBlock block;
    block.kind = BlockKind::kListItem;
    block.page = page_;
    for (size_t i = 0; i < row_.size(); ++i) {
      if (i > 0) block.text += " | ";
      block.text += row_[i];
    }
    row_.clear();
    return Deliver(std::move(block));
  }

  Status Flush() {
    if (InCell()) return Status::OK();
    const Context ctx = Current();
    std::string text;
    if (ctx.kind == BlockKind::kCode) {
      std::string_view v(buf_);
      while (!v.empty() && (v.front() == '\n' || v.front() == '\r')) v.remove_prefix(1);
      while (!v.empty() &&
             (v.back() == '\n' || v.back() == ' ' || v.back() == '\r' || v.back() == '\t')) {
        v.remove_suffix(1);
      }
      text.assign(v);
    } else {
      // Drop spaces around the newlines that <br> left, then trim.
      for (char c : buf_) {
        if (c == '\n') {
          while (!text.empty() && text.back() == ' ') text.pop_back();
          if (!text.empty() && text.back() != '\n') text.push_back('\n');
        } else if (c == ' ' && (text.empty() || text.back() == '\n')) {
          continue;
        } else {
          text.push_back(c);
        }
      }
      text.assign(TrimAscii(text));
    }
    buf_.clear();
    if (text.empty() || TrimAscii(text).empty()) return Status::OK();
    TextBlock block;
    block.kind = ctx.kind;
    block.heading_level = ctx.kind == BlockKind::kHeading ? ctx.level : 0;
    block.page = page_;
    block.text = std::move(text);
    if (block.kind == BlockKind::kHeading) {
      // A heading is one line.
      for (char& c : block.text) {
        if (c == '\n') c = ' ';
      }
    }
    return Deliver(std::move(block));
  }

  Status Deliver(TextBlock&& block) {
    if (!IsValidUtf8(block.text)) {
      std::string repaired;
      AppendRepairedUtf8(block.text, repaired);
      block.text = std::move(repaired);
    }
    return emit_(std::move(block));
  }

  const HtmlDocument::EmitFn& emit_;
  const int page_;
  std::string buf_;
  std::vector<Context> contexts_;
  std::vector<std::string> row_;
  int row_depth_ = 0;
  int cell_depth_ = 0;
  int pre_depth_ = 0;
};

const GumboNode* FindChild(const GumboNode* parent, GumboTag tag) {
  const GumboVector* children = ChildrenOf(parent);
  if (children == nullptr) return nullptr;
  for (unsigned i = 0; i < children->length; ++i) {
    const auto* child = static_cast<const GumboNode*>(children->data[i]);
    if (child->type == GUMBO_NODE_ELEMENT && child->v.element.tag == tag) return child;
  }
  return nullptr;
}

char LowerAscii(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

// Last position < end where `needle` (lower-case) starts, ignoring case; npos if none.
size_t RFindNoCase(std::string_view hay, std::string_view needle, size_t end) {
  if (needle.size() > end) return std::string_view::npos;
  for (size_t i = end - needle.size() + 1; i-- > 0;) {
    size_t k = 0;
    while (k < needle.size() && LowerAscii(hay[i + k]) == needle[k]) ++k;
    if (k == needle.size()) return i;
  }
  return std::string_view::npos;
}

// When position `pos` lies inside an open raw-text region or comment (the
// last opener before it has no closer after it), the position of the
// earliest such opener; npos otherwise.
size_t RawRegionOpenedBefore(std::string_view html, size_t pos) {
  static constexpr std::pair<std::string_view, std::string_view> kRegions[] = {
      {"<script", "</script"},     {"<style", "</style"}, {"<pre", "</pre"},
      {"<textarea", "</textarea"}, {"<!--", "-->"},       {"<xmp", "</xmp"}};
  size_t earliest = std::string_view::npos;
  for (const auto& [open, close] : kRegions) {
    const size_t opened = RFindNoCase(html, open, pos);
    if (opened == std::string_view::npos) continue;
    const size_t closed = RFindNoCase(html, close, pos);
    if (closed == std::string_view::npos || closed < opened) {
      earliest = std::min(earliest, opened);
    }
  }
  return earliest;
}

bool IsBlockStartTag(std::string_view html, size_t i) {
  static constexpr std::string_view kTags[] = {
      "p",       "h1",         "h2",     "h3",     "h4",   "h5",    "h6",     "div",
      "li",      "ul",         "ol",     "dl",     "dt",   "dd",    "table",  "section",
      "article", "blockquote", "header", "footer", "main", "aside", "figure", "hr"};
  if (html[i] != '<') return false;
  for (std::string_view tag : kTags) {
    if (i + 1 + tag.size() >= html.size()) continue;
    size_t k = 0;
    while (k < tag.size() && LowerAscii(html[i + 1 + k]) == tag[k]) ++k;
    if (k != tag.size()) continue;
    const char after = html[i + 1 + tag.size()];
    if (after == '>' || after == ' ' || after == '\t' || after == '\n' || after == '\r' ||
        after == '/') {
      return true;
    }
  }
  return false;
}

}  // namespace

size_t FindHtmlSegmentCut(std::string_view html, size_t limit) {
  if (limit >= html.size()) return html.size();
  int raw_hits = 0;  // bounds the work on pathological inputs
  for (size_t i = limit; i-- > 1;) {
    if (html[i] != '<' || !IsBlockStartTag(html, i)) continue;
    const size_t opener = RawRegionOpenedBefore(html, i);
    if (opener == std::string_view::npos) return i;
    if (++raw_hits > 32) break;
    i = opener;  // keep looking before the region that holds this tag
  }
  for (size_t i = limit; i-- > 1;) {
    if (html[i - 1] == '>') return i;
  }
  for (size_t i = limit; i-- > 1;) {
    if (html[i] == ' ' || html[i] == '\n') return i;
  }
  return limit;
}

Result<std::unique_ptr<HtmlDocument>> HtmlDocument::Parse(std::string_view html,
                                                          uint64_t* invalid_bytes_replaced) {
  if (html.size() >= 3 && html.substr(0, 3) == "\xEF\xBB\xBF") html.remove_prefix(3);
  if (HtmlNestingDepth(html, kMaxHtmlNesting) > kMaxHtmlNesting) {
    return Status::InvalidArgument("HTML elements nest deeper than " +
                                   std::to_string(kMaxHtmlNesting));
  }
  std::unique_ptr<HtmlDocument> doc(new HtmlDocument());
  doc->source_.reserve(html.size());
  const uint64_t replaced = AppendRepairedUtf8(html, doc->source_);
  if (invalid_bytes_replaced != nullptr) *invalid_bytes_replaced += replaced;
  GumboOptions options = kGumboDefaultOptions;
  options.max_errors = 0;  // parse errors are not reported; do not keep them in memory
  doc->output_ = gumbo_parse_with_options(&options, doc->source_.data(), doc->source_.size());
  doc->ReadHeadMetadata();
  return doc;
}

HtmlDocument::~HtmlDocument() {
  if (output_ != nullptr) gumbo_destroy_output(&kGumboDefaultOptions, output_);
}

void HtmlDocument::ReadHeadMetadata() {
  if (output_ == nullptr || output_->root == nullptr) return;
  const GumboNode* root = output_->root;
  if (root->type == GUMBO_NODE_ELEMENT) {
    if (const GumboAttribute* lang = gumbo_get_attribute(&root->v.element.attributes, "lang")) {
      language_ = std::string(TrimAscii(lang->value));
    }
  }
  const GumboNode* head = FindChild(root, GUMBO_TAG_HEAD);
  if (head == nullptr) return;
  const GumboVector& children = head->v.element.children;
  for (unsigned i = 0; i < children.length; ++i) {
    const auto* child = static_cast<const GumboNode*>(children.data[i]);
    if (child->type != GUMBO_NODE_ELEMENT) continue;
    if (child->v.element.tag == GUMBO_TAG_TITLE && title_.empty()) {
      title_ = CollapsedText(child);
    } else if (child->v.element.tag == GUMBO_TAG_META && author_.empty()) {
      const GumboAttribute* name = gumbo_get_attribute(&child->v.element.attributes, "name");
      const GumboAttribute* content = gumbo_get_attribute(&child->v.element.attributes, "content");
      if (name != nullptr && content != nullptr && strcasecmp(name->value, "author") == 0) {
        std::string collapsed;
        AppendCollapsed(content->value, collapsed);
        author_ = std::string(TrimAscii(collapsed));
      }
    }
  }
}

Status HtmlDocument::EmitBlocks(const EmitFn& emit, int page) const {
  if (output_ == nullptr || output_->root == nullptr) return Status::OK();
  BlockWalker walker(emit, page);
  return walker.Walk(output_->root);
}

}  // namespace sluice::formats
