// HtmlNestingDepth: the depth of the stack of open elements that an HTML5
// tree builder (gumbo) reaches on a document, estimated in one linear pass so
// a hostile document is refused before gumbo spends quadratic time on it.
//
// The scan tokenizes like the HTML5 tokenizer (attributes with quoted values,
// "<" not followed by a letter is text, "<!-->" and "<!--->" are complete
// comments, raw text and RCDATA elements) and keeps a model of the stack of
// open elements that follows the tree builder's rules where they decide the
// depth:
//  - "/>" closes only void elements and foreign (SVG, MathML) ones; on any
//    other element it is ignored, so "<div/>" opens a div;
//  - an end tag pops only when its element is open and in scope: a stray end
//    tag, or one behind a scope boundary (table, td, object, ...) or, for an
//    ordinary element, behind a special one (div, ul, ...), pops nothing;
//  - elements whose start tag implies an end (p, li, dd/dt, headings, table
//    rows and cells, a, nobr, button) close the open one as the builder does;
//  - formatting elements (b, i, a, font, ...) closed by something else stay
//    in the list of active formatting elements and are reopened before the
//    next text or start tag (with the "Noah's Ark" limit of three equal
//    entries); a misnested formatting end tag (the adoption agency) removes
//    the formatting element only.
// Where the model is not exact (select, foster parenting, markers of the
// formatting list, breakout from foreign content) it errs towards a deeper
// count; where it may undercount (the adoption agency's clones) it does so by
// at most a factor of two. Every step is amortised O(1) per token.
#include <algorithm>
#include <array>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "sources/formats/html_extract.h"

namespace sluice::formats {
namespace {

bool IsAsciiAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsHtmlSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'; }
char Lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool OneOf(std::string_view name, std::initializer_list<std::string_view> names) {
  for (std::string_view n : names) {
    if (name == n) return true;
  }
  return false;
}

// Never on the stack: void elements, and the few whose start tag the builder
// either merges (html, body, head) or keeps flat (option, ruby text).
bool NeverPushed(std::string_view n) {
  return OneOf(n, {"area",   "base",  "br",       "col",     "embed",    "hr",      "img",
                   "input",  "link",  "meta",     "param",   "source",   "track",   "wbr",
                   "keygen", "frame", "basefont", "bgsound", "image",    "isindex", "nextid",
                   "spacer", "html",  "head",     "body",    "frameset", "option",  "optgroup",
                   "rb",     "rt",    "rp",       "rtc",     "colgroup"});
}

bool IsFormatting(std::string_view n) {
  return OneOf(n, {"a", "b", "big", "code", "em", "font", "i", "nobr", "s", "small", "strike",
                   "strong", "tt", "u"});
}

bool IsHeading(std::string_view n) { return OneOf(n, {"h1", "h2", "h3", "h4", "h5", "h6"}); }

// The HTML "special" category (those that can be on the stack here).
bool IsSpecial(std::string_view n) {
  return IsHeading(n) ||
         OneOf(n, {"address",  "applet",   "article", "aside",    "blockquote", "button",
                   "caption",  "center",   "dd",      "details",  "dialog",     "dir",
                   "div",      "dl",       "dt",      "fieldset", "figcaption", "figure",
                   "footer",   "form",     "header",  "hgroup",   "iframe",     "li",
                   "listing",  "main",     "marquee", "menu",     "nav",        "noembed",
                   "noframes", "noscript", "object",  "ol",       "p",          "plaintext",
                   "pre",      "script",   "search",  "section",  "select",     "style",
                   "summary",  "table",    "tbody",   "td",       "template",   "textarea",
                   "tfoot",    "th",       "thead",   "title",    "tr",         "ul",
                   "xmp"});
}

// Boundaries of the default "has an element in scope".
bool IsScopeBoundary(std::string_view n) {
  return OneOf(n, {"applet", "caption", "table", "td", "th", "marquee", "object", "template"});
}

bool IsForeignIntegrationPoint(std::string_view n) {
  return OneOf(
      n, {"foreignobject", "desc", "title", "mi", "mo", "mn", "ms", "mtext", "annotation-xml"});
}

// HTML start tags that leave foreign content (the builder pops out of it; the
// model keeps the foreign elements open, which only counts deeper).
bool BreaksOutOfForeign(std::string_view n) {
  return IsHeading(n) ||
         OneOf(n, {"b",   "big",   "blockquote", "body",  "br",    "center", "code",   "dd",
                   "div", "dl",    "dt",         "em",    "embed", "head",   "hr",     "i",
                   "img", "li",    "listing",    "menu",  "meta",  "nobr",   "ol",     "p",
                   "pre", "ruby",  "s",          "small", "span",  "strong", "strike", "sub",
                   "sup", "table", "tt",         "u",     "ul",    "var"});
}

// Start tags that close an open p (in button scope) first.
bool ClosesP(std::string_view n) {
  return IsHeading(n) ||
         OneOf(n, {"address", "article", "aside",   "blockquote", "center",   "details",
                   "dialog",  "dir",     "div",     "dl",         "fieldset", "figcaption",
                   "figure",  "footer",  "header",  "hgroup",     "main",     "menu",
                   "nav",     "ol",      "p",       "search",     "section",  "summary",
                   "ul",      "pre",     "listing", "form",       "table",    "hr",
                   "xmp",     "li",      "dd",      "dt",         "plaintext"});
}

// Elements whose content the tokenizer reads as text up to their end tag.
bool IsRawText(std::string_view n) {
  return OneOf(n, {"script", "style", "xmp", "iframe", "noembed", "noframes", "textarea", "title"});
}

// Scopes, as prefix maxima kept on every stack entry: last[k] is the index of
// the topmost entry at or below it in category k, or -1.
enum Category : int {
  kSpecial = 0,    // the special category (any end tag of an ordinary element stops there)
  kScope,          // default scope boundaries
  kButtonScope,    // + button
  kListItemScope,  // + ol, ul
  kLiStop,         // special except address, div, p (where "<li>" stops looking)
  kHtml,           // an HTML (not foreign) element
  kCategories,
};

class StackModel {
 public:
  explicit StackModel(size_t stop_above) : stop_above_(stop_above) {}

  size_t deepest() const { return deepest_; }
  bool exceeded() const { return deepest_ > stop_above_; }

  bool InForeign() const { return !stack_.empty() && stack_.back().foreign_content; }

  void Text() { Reconstruct(); }

  void StartTag(const std::string& name, std::string_view attributes, bool self_closing) {
    const bool foreign_parent = InForeign();
    if (foreign_parent && !BreaksOutOfForeign(name)) {
      if (self_closing) return;
      Push(name, attributes, /*foreign=*/true);
      return;
    }
    if (name == "svg" || name == "math") {
      Reconstruct();
      if (!self_closing) Push(name, attributes, /*foreign=*/true);
      return;
    }
    if (ClosesP(name) && InScope("p", kButtonScope)) PopTo(Topmost("p"));
    if (name == "li") {
      CloseListItem({"li"});
    } else if (name == "dd" || name == "dt") {
      CloseListItem({"dd", "dt"});
    } else if (IsHeading(name)) {
      if (!stack_.empty() && IsHeading(stack_.back().name)) PopTo(stack_.size() - 1);
    } else if (name == "a" || name == "nobr") {
      if (Topmost(name) >= 0) EndTag(name);  // an open one is closed first
    } else if (name == "button") {
      if (InScope("button", kScope)) PopTo(Topmost("button"));
    } else if (name == "td" || name == "th") {
      const int table = Topmost("table");
      const int cell = std::max(Topmost("td"), Topmost("th"));
      const int row = Topmost("tr");
      if (cell > table && cell > row) {
        PopTo(cell);
      } else if (row > table) {
        PopTo(row + 1);
      }
    } else if (name == "tr" || name == "tbody" || name == "thead" || name == "tfoot" ||
               name == "caption" || name == "table") {
      const int table = Topmost("table");
      if (table >= 0 && !stack_.empty() &&
          OneOf(stack_.back().name, {"table", "tbody", "thead", "tfoot", "tr"})) {
        // A table start tag directly in a table ends that table.
        if (name == "table") PopTo(table);
      }
      const int table_now = Topmost("table");
      if (name != "table" && table_now >= 0) {
        int keep = table_now;  // pop above the table, or above its open section for a row
        if (name == "tr") {
          keep = std::max({keep, Topmost("tbody"), Topmost("thead"), Topmost("tfoot")});
        }
        PopTo(keep + 1);
      }
    }
    if (NeverPushed(name)) {
      Reconstruct();
      return;
    }
    if (!ClosesP(name) && !IsScopeBoundary(name)) Reconstruct();
    Push(name, attributes, /*foreign=*/false);
  }

  void EndTag(const std::string& name) {
    if (InForeign()) {
      // The foreign element of that name when only foreign ones are above it.
      const int at = Topmost(name);
      if (at >= 0 && stack_[at].foreign && Last(kHtml) < at) {
        PopTo(at, /*own_end_tag=*/true);
        return;
      }
    }
    if (NeverPushed(name)) return;  // </br>, </p> without p, ... change no depth
    if (name == "p") {
      if (InScope("p", kButtonScope)) PopTo(Topmost("p"), true);
    } else if (name == "li") {
      if (InScope("li", kListItemScope)) PopTo(Topmost("li"), true);
    } else if (IsHeading(name)) {
      int at = -1;
      for (std::string_view h : {"h1", "h2", "h3", "h4", "h5", "h6"}) at = std::max(at, Topmost(h));
      if (at >= 0 && Last(kScope) <= at) PopTo(at, true);
    } else if (name == "table") {
      PopTo(Topmost("table"), true);  // table scope: cells above it are closed too
    } else if (OneOf(name, {"td", "th", "tr", "tbody", "thead", "tfoot", "caption"})) {
      const int at = Topmost(name);
      if (at >= 0 && at > Topmost("table")) PopTo(at, true);
    } else if (IsFormatting(name)) {
      const int at = Topmost(name);
      if (at < 0 || Last(kScope) > at) return;
      if (Last(kSpecial) > at) {
        Remove(at);  // the adoption agency: the element leaves the stack, the rest stays
      } else {
        PopTo(at, true);
      }
    } else if (IsSpecial(name)) {
      if (InScope(name, kScope)) PopTo(Topmost(name), true);
    } else {
      const int at = Topmost(name);
      if (at >= 0 && Last(kSpecial) <= at) PopTo(at, true);
    }
  }

 private:
  struct Entry {
    std::string name;
    std::string attributes;        // formatting elements only (Noah's Ark key)
    bool foreign = false;          // an SVG or MathML element
    bool foreign_content = false;  // its children are parsed as foreign content
    bool alive = true;             // false: removed by the adoption agency
    bool formatting = false;
    std::array<int, kCategories> last{};
  };
  struct Pending {
    std::string name, attributes;
  };

  int Last(Category c) const { return stack_.empty() ? -1 : stack_.back().last[c]; }

  int Topmost(std::string_view name) const {
    auto it = positions_.find(std::string(name));
    return it == positions_.end() || it->second.empty() ? -1 : it->second.back();
  }

  bool InScope(std::string_view name, Category boundaries) const {
    const int at = Topmost(name);
    return at >= 0 && Last(boundaries) <= at;
  }

  // <li>, <dd>, <dt>: close the open item unless a special element other
  // than address, div or p stands between.
  void CloseListItem(std::initializer_list<std::string_view> names) {
    int at = -1;
    for (std::string_view n : names) at = std::max(at, Topmost(n));
    if (at >= 0 && Last(kLiStop) <= at) PopTo(at);
  }

  void Push(const std::string& name, std::string_view attributes, bool foreign) {
    Entry e;
    e.name = name;
    e.foreign = foreign;
    e.foreign_content = foreign && !IsForeignIntegrationPoint(name);
    e.formatting = !foreign && IsFormatting(name);
    if (e.formatting) e.attributes = std::string(attributes);
    const int index = static_cast<int>(stack_.size());
    const bool special = foreign ? IsForeignIntegrationPoint(name) : IsSpecial(name);
    const bool boundary = foreign ? IsForeignIntegrationPoint(name) : IsScopeBoundary(name);
    const bool in_category[kCategories] = {
        special,
        boundary,
        boundary || (!foreign && name == "button"),
        boundary || (!foreign && (name == "ol" || name == "ul")),
        special && !(name == "address" || name == "div" || name == "p"),
        !foreign,
    };
    for (int c = 0; c < kCategories; ++c) e.last[c] = in_category[c] ? index : Last(Category(c));
    stack_.push_back(std::move(e));
    positions_[name].push_back(index);
    ++live_;
    deepest_ = std::max(deepest_, live_);
  }

  // Pops every entry from the top down to and including `index`. Formatting
  // elements popped by anything but their own end tag stay active (pending).
  void PopTo(size_t index, bool own_end_tag = false) {
    while (stack_.size() > index) {
      Entry& e = stack_.back();
      if (e.alive) {
        positions_[e.name].pop_back();
        --live_;
        const bool own = own_end_tag && stack_.size() - 1 == index;
        if (e.formatting && !own) AddPending(std::move(e.name), std::move(e.attributes));
      }
      stack_.pop_back();
    }
  }
  void PopTo(int index, bool own_end_tag = false) {
    if (index >= 0) PopTo(static_cast<size_t>(index), own_end_tag);
  }

  // The adoption agency, counted: the formatting element leaves the stack.
  void Remove(int index) {
    Entry& e = stack_[static_cast<size_t>(index)];
    positions_[e.name].pop_back();  // it is the topmost of its name
    e.alive = false;
    --live_;
  }

  void AddPending(std::string&& name, std::string&& attributes) {
    std::string key = name + '\0' + attributes;
    int& equal = pending_equal_[key];
    if (equal >= 3) return;  // Noah's Ark
    ++equal;
    pending_.push_back({std::move(name), std::move(attributes)});
  }

  // Reopens the active formatting elements that are no longer open.
  void Reconstruct() {
    if (pending_.empty() || InForeign()) return;
    std::vector<Pending> reopen;
    reopen.swap(pending_);
    pending_equal_.clear();
    for (Pending& p : reopen) {
      Push(p.name, p.attributes, /*foreign=*/false);
      if (exceeded()) return;
    }
  }

  size_t stop_above_;
  std::vector<Entry> stack_;
  std::unordered_map<std::string, std::vector<int>> positions_;  // of live entries, ascending
  std::vector<Pending> pending_;
  std::unordered_map<std::string, int> pending_equal_;
  size_t live_ = 0;
  size_t deepest_ = 0;
};

// Reads a tag's attributes from html[i] (just past its name) to its '>'.
// Returns the index past the '>' (npos when the input ends inside the tag,
// where the tokenizer drops it) and whether it ended with "/>".
size_t SkipAttributes(std::string_view html, size_t i, bool& self_closing) {
  self_closing = false;
  const size_t n = html.size();
  while (i < n) {
    const char c = html[i];
    if (IsHtmlSpace(c)) {
      ++i;
    } else if (c == '/') {
      if (i + 1 < n && html[i + 1] == '>') {
        self_closing = true;
        return i + 2;
      }
      ++i;
    } else if (c == '>') {
      return i + 1;
    } else {
      ++i;  // the first character of a name may be anything, even '='
      while (i < n && !IsHtmlSpace(html[i]) && html[i] != '/' && html[i] != '>' && html[i] != '=')
        ++i;
      while (i < n && IsHtmlSpace(html[i])) ++i;
      if (i < n && html[i] == '=') {
        ++i;
        while (i < n && IsHtmlSpace(html[i])) ++i;
        if (i < n && (html[i] == '"' || html[i] == '\'')) {
          const size_t close = html.find(html[i], i + 1);
          if (close == std::string_view::npos) return std::string_view::npos;
          i = close + 1;
        } else {
          while (i < n && !IsHtmlSpace(html[i]) && html[i] != '>') ++i;
        }
      }
    }
  }
  return std::string_view::npos;
}

// The end of a raw text element's content: the start of "</name" followed by
// a space, '/' or '>' (case-insensitive), or npos.
size_t FindRawTextEnd(std::string_view html, std::string_view name, size_t from) {
  for (size_t i = html.find("</", from); i != std::string_view::npos; i = html.find("</", i + 1)) {
    size_t k = 0;
    while (k < name.size() && i + 2 + k < html.size() && Lower(html[i + 2 + k]) == name[k]) ++k;
    if (k != name.size()) continue;
    const size_t after = i + 2 + k;
    if (after >= html.size()) return std::string_view::npos;
    if (IsHtmlSpace(html[after]) || html[after] == '/' || html[after] == '>') return i;
  }
  return std::string_view::npos;
}

}  // namespace

size_t HtmlNestingDepth(std::string_view html, size_t stop_above) {
  StackModel model(stop_above);
  const size_t n = html.size();
  size_t i = 0;
  std::string name;
  while (i < n && !model.exceeded()) {
    const size_t lt = html.find('<', i);
    if (lt != i) {
      model.Text();
      if (lt == std::string_view::npos) break;
      i = lt;
      continue;
    }
    if (i + 1 >= n) break;  // a lone '<' at the end is text
    const char next = html[i + 1];
    if (html.compare(i, 4, "<!--") == 0) {
      size_t j = i + 4;
      if (j < n && html[j] == '>') {  // "<!-->": an empty comment
        i = j + 1;
        continue;
      }
      if (html.compare(j, 2, "->") == 0) {  // "<!--->"
        i = j + 2;
        continue;
      }
      const size_t dashes = html.find("-->", j);
      const size_t bang = html.find("--!>", j);
      if (dashes == std::string_view::npos && bang == std::string_view::npos) break;
      i = dashes < bang ? dashes + 3 : bang + 4;
      continue;
    }
    if (next == '!' || next == '?') {  // doctype, bogus comment, CDATA
      const size_t gt = html.find('>', i + 2);
      if (gt == std::string_view::npos) break;
      i = gt + 1;
      continue;
    }
    const bool closing = next == '/';
    const size_t name_at = i + (closing ? 2 : 1);
    if (name_at >= n) break;
    if (!IsAsciiAlpha(html[name_at])) {
      if (!closing) {  // "<" then not a letter: text
        model.Text();
        i = i + 1;
        continue;
      }
      if (html[name_at] == '>') {  // "</>": ignored
        i = name_at + 1;
        continue;
      }
      const size_t gt = html.find('>', name_at);  // "</ ..." is a bogus comment
      if (gt == std::string_view::npos) break;
      i = gt + 1;
      continue;
    }
    size_t j = name_at;
    name.clear();
    while (j < n && !IsHtmlSpace(html[j]) && html[j] != '/' && html[j] != '>') {
      name.push_back(Lower(html[j++]));
    }
    bool self_closing = false;
    const size_t after = SkipAttributes(html, j, self_closing);
    if (after == std::string_view::npos) break;  // the input ends inside the tag
    const std::string_view attributes = html.substr(j, after - j);
    i = after;
    if (closing) {
      model.EndTag(name);
      continue;
    }
    const bool raw_text = !model.InForeign() && IsRawText(name);
    if (!model.InForeign() && name == "plaintext") break;  // the rest is text
    model.StartTag(name, attributes, self_closing);
    if (raw_text) {
      const size_t end = FindRawTextEnd(html, name, i);
      if (end == std::string_view::npos) break;
      i = end;  // the end tag is read as a token and pops the element
    }
  }
  return model.deepest();
}

}  // namespace sluice::formats
