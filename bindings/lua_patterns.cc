// LuaJIT 2.1's pattern matcher (src/lib_string.c, Copyright (C) 2005-2023 Mike Pall, MIT
// licence; itself from Lua 5.1's lstrlib.c, Copyright (C) 1994-2008 Lua.org, PUC-Rio, MIT
// licence), with a step budget: see lua_patterns.h. Kept close to the original so the two can
// be compared line by line; the differences are the step counting, the ASCII class tests
// (LuaJIT's lj_char_isa table, locale-independent) and luaL_error in place of lj_err_caller.
#include "bindings/lua_patterns.h"

#include <atomic>
#include <cstddef>
#include <cstring>

namespace orch {
namespace {

std::atomic<PatternCheck> g_check{nullptr};

constexpr int kCapUnfinished = -1;
constexpr int kCapPosition = -2;
constexpr int kMaxLevel = 200;  // LJ_MAX_XLEVEL: "pattern too complex"
constexpr char kEsc = '%';

inline unsigned char uchar(char c) {
  return static_cast<unsigned char>(c);
}

struct MatchState {
  const char* src_init;  // start of the subject
  const char* src_end;   // its end
  lua_State* L;
  int level;  // captures, finished or not
  int depth;
  unsigned steps;
  struct {
    const char* init;
    ptrdiff_t len;
  } capture[LUA_MAXCAPTURES];
};

// The budget: every kPatternCheckEvery steps, ask whether the caller must stop.
inline void step(MatchState* ms, size_t n = 1) {
  ms->steps += static_cast<unsigned>(n > kPatternCheckEvery ? kPatternCheckEvery : n);
  if (ms->steps >= kPatternCheckEvery) {
    ms->steps = 0;
    if (PatternCheck c = g_check.load(std::memory_order_relaxed)) c(ms->L);
  }
}

// ASCII classes as LuaJIT's lj_char.c defines them (no locale).
bool is_alpha(int c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool is_digit(int c) {
  return c >= '0' && c <= '9';
}
bool is_class(int c, int cl) {
  switch (cl | 0x20) {  // lower case
    case 'a':
      return is_alpha(c);
    case 'c':
      return c < 32 || c == 127;
    case 'd':
      return is_digit(c);
    case 'g':
      return c > 32 && c < 127;
    case 'l':
      return c >= 'a' && c <= 'z';
    case 'p':
      return c > 32 && c < 127 && !is_alpha(c) && !is_digit(c);
    case 's':
      return c == ' ' || (c >= 9 && c <= 13);
    case 'u':
      return c >= 'A' && c <= 'Z';
    case 'w':
      return is_alpha(c) || is_digit(c);
    case 'x':
      return is_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
    default:
      return false;
  }
}

int match_class(int c, int cl) {
  if ((cl & 0xc0) == 0x40) {
    switch (cl | 0x20) {
      case 'a':
      case 'c':
      case 'd':
      case 'g':
      case 'l':
      case 'p':
      case 's':
      case 'u':
      case 'w':
      case 'x': {
        bool t = is_class(c, cl);
        return (cl & 0x20) ? t : !t;
      }
      default:
        break;
    }
    if (cl == 'z') return c == 0;
    if (cl == 'Z') return c != 0;
  }
  return cl == c;
}

int check_capture(MatchState* ms, int l) {
  l -= '1';
  if (l < 0 || l >= ms->level || ms->capture[l].len == kCapUnfinished)
    return luaL_error(ms->L, "invalid capture index");
  return l;
}

int capture_to_close(MatchState* ms) {
  int level = ms->level;
  for (level--; level >= 0; level--)
    if (ms->capture[level].len == kCapUnfinished) return level;
  return luaL_error(ms->L, "invalid pattern capture");
}

const char* classend(MatchState* ms, const char* p) {
  switch (*p++) {
    case kEsc:
      if (*p == '\0') luaL_error(ms->L, "malformed pattern (ends with '%%')");
      return p + 1;
    case '[':
      if (*p == '^') p++;
      do {  // look for a ']'
        if (*p == '\0') luaL_error(ms->L, "malformed pattern (missing ']')");
        if (*(p++) == kEsc && *p != '\0') p++;  // skip escapes (e.g. '%]')
      } while (*p != ']');
      return p + 1;
    default:
      return p;
  }
}

int matchbracketclass(int c, const char* p, const char* ec) {
  int sig = 1;
  if (*(p + 1) == '^') {
    sig = 0;
    p++;  // skip the '^'
  }
  while (++p < ec) {
    if (*p == kEsc) {
      p++;
      if (match_class(c, uchar(*p))) return sig;
    } else if ((*(p + 1) == '-') && (p + 2 < ec)) {
      p += 2;
      if (uchar(*(p - 2)) <= c && c <= uchar(*p)) return sig;
    } else if (uchar(*p) == c) {
      return sig;
    }
  }
  return !sig;
}

int singlematch(int c, const char* p, const char* ep) {
  switch (*p) {
    case '.':
      return 1;
    case kEsc:
      return match_class(c, uchar(*(p + 1)));
    case '[':
      return matchbracketclass(c, p, ep - 1);
    default:
      return uchar(*p) == c;
  }
}

const char* match(MatchState* ms, const char* s, const char* p);

const char* matchbalance(MatchState* ms, const char* s, const char* p) {
  if (*p == 0 || *(p + 1) == 0) luaL_error(ms->L, "unbalanced pattern");
  if (*s != *p) return nullptr;
  int b = *p;
  int e = *(p + 1);
  int cont = 1;
  const char* start = s;
  while (++s < ms->src_end) {
    if (*s == e) {
      if (--cont == 0) {
        step(ms, static_cast<size_t>(s - start));
        return s + 1;
      }
    } else if (*s == b) {
      cont++;
    }
  }
  step(ms, static_cast<size_t>(s - start));
  return nullptr;  // the subject ends out of balance
}

const char* max_expand(MatchState* ms, const char* s, const char* p, const char* ep) {
  ptrdiff_t i = 0;  // the longest repetition of the item
  while ((s + i) < ms->src_end && singlematch(uchar(*(s + i)), p, ep)) i++;
  step(ms, static_cast<size_t>(i));
  // try the rest with the most repetitions first
  while (i >= 0) {
    const char* res = match(ms, (s + i), ep + 1);
    if (res) return res;
    i--;
  }
  return nullptr;
}

const char* min_expand(MatchState* ms, const char* s, const char* p, const char* ep) {
  for (;;) {
    const char* res = match(ms, s, ep + 1);
    if (res != nullptr) return res;
    if (s < ms->src_end && singlematch(uchar(*s), p, ep))
      s++;  // one more repetition
    else
      return nullptr;
  }
}

const char* start_capture(MatchState* ms, const char* s, const char* p, int what) {
  int level = ms->level;
  if (level >= LUA_MAXCAPTURES) luaL_error(ms->L, "too many captures");
  ms->capture[level].init = s;
  ms->capture[level].len = what;
  ms->level = level + 1;
  const char* res = match(ms, s, p);
  if (res == nullptr) ms->level--;  // undo the capture
  return res;
}

const char* end_capture(MatchState* ms, const char* s, const char* p) {
  int l = capture_to_close(ms);
  ms->capture[l].len = s - ms->capture[l].init;  // close the capture
  const char* res = match(ms, s, p);
  if (res == nullptr) ms->capture[l].len = kCapUnfinished;  // undo
  return res;
}

const char* match_capture(MatchState* ms, const char* s, int l) {
  l = check_capture(ms, l);
  auto len = static_cast<size_t>(ms->capture[l].len);
  step(ms, len);
  if (static_cast<size_t>(ms->src_end - s) >= len && memcmp(ms->capture[l].init, s, len) == 0)
    return s + len;
  return nullptr;
}

const char* match(MatchState* ms, const char* s, const char* p) {
  if (++ms->depth > kMaxLevel) luaL_error(ms->L, "pattern too complex");
  step(ms);
init:  // goto for tail calls, as in the original
  switch (*p) {
    case '(':
      if (*(p + 1) == ')')  // position capture
        s = start_capture(ms, s, p + 2, kCapPosition);
      else
        s = start_capture(ms, s, p + 1, kCapUnfinished);
      break;
    case ')':
      s = end_capture(ms, s, p + 1);
      break;
    case kEsc:
      switch (*(p + 1)) {
        case 'b':  // balanced string
          s = matchbalance(ms, s, p + 2);
          if (s == nullptr) break;
          p += 4;
          goto init;
        case 'f': {  // frontier
          p += 2;
          if (*p != '[') luaL_error(ms->L, "missing '[' after '%%f' in pattern");
          const char* ep = classend(ms, p);
          char previous = (s == ms->src_init) ? '\0' : *(s - 1);
          if (matchbracketclass(uchar(previous), p, ep - 1) ||
              !matchbracketclass(uchar(*s), p, ep - 1)) {
            s = nullptr;
            break;
          }
          p = ep;
          goto init;
        }
        default:
          if (is_digit(uchar(*(p + 1)))) {  // a back reference %1-%9
            s = match_capture(ms, s, uchar(*(p + 1)));
            if (s == nullptr) break;
            p += 2;
            goto init;
          }
          goto dflt;
      }
      break;
    case '\0':  // end of pattern: matched
      break;
    case '$':
      if (*(p + 1) != '\0') goto dflt;  // '$' is special only at the end
      if (s != ms->src_end) s = nullptr;
      break;
    default:
    dflt : {
      const char* ep = classend(ms, p);
      int m = s < ms->src_end && singlematch(uchar(*s), p, ep);
      switch (*ep) {
        case '?': {
          const char* res;
          if (m && ((res = match(ms, s + 1, ep + 1)) != nullptr)) {
            s = res;
            break;
          }
          p = ep + 1;
          goto init;
        }
        case '*':
          s = max_expand(ms, s, p, ep);
          break;
        case '+':
          s = (m ? max_expand(ms, s + 1, p, ep) : nullptr);
          break;
        case '-':
          s = min_expand(ms, s, p, ep);
          break;
        default:
          if (m) {
            s++;
            p = ep;
            goto init;
          }
          s = nullptr;
          break;
      }
      break;
    }
  }
  ms->depth--;
  return s;
}

void init_state(MatchState* ms, lua_State* L, const char* s, size_t len) {
  ms->L = L;
  ms->src_init = s;
  ms->src_end = s + len;
  ms->level = ms->depth = 0;
  ms->steps = 0;
}

void push_onecapture(MatchState* ms, int i, const char* s, const char* e) {
  if (i >= ms->level) {
    if (i == 0)  // no explicit captures: the whole match
      lua_pushlstring(ms->L, s, static_cast<size_t>(e - s));
    else
      luaL_error(ms->L, "invalid capture index");
  } else {
    ptrdiff_t l = ms->capture[i].len;
    if (l == kCapUnfinished) luaL_error(ms->L, "unfinished capture");
    if (l == kCapPosition)
      lua_pushinteger(ms->L, ms->capture[i].init - ms->src_init + 1);
    else
      lua_pushlstring(ms->L, ms->capture[i].init, static_cast<size_t>(l));
  }
}

int push_captures(MatchState* ms, const char* s, const char* e) {
  int nlevels = (ms->level == 0 && s) ? 1 : ms->level;
  luaL_checkstack(ms->L, nlevels, "too many captures");
  for (int i = 0; i < nlevels; i++) push_onecapture(ms, i, s, e);
  return nlevels;
}

bool has_pattern(const char* p, size_t len) {
  for (size_t i = 0; i < len; i++)
    if (p[i] != '\0' && strchr("^$*+?.([%-", p[i])) return true;
  return false;
}

int str_find_aux(lua_State* L, bool find) {
  size_t slen, plen;
  const char* s = luaL_checklstring(L, 1, &slen);
  const char* p = luaL_checklstring(L, 2, &plen);
  ptrdiff_t start = luaL_optinteger(L, 3, 1);
  if (start < 0)
    start += static_cast<ptrdiff_t>(slen);
  else
    start--;
  if (start < 0) start = 0;
  auto st = static_cast<size_t>(start);
  if (st > slen) st = slen;
  if (find && (lua_toboolean(L, 4) || !has_pattern(p, plen))) {  // a fixed string
    // glibc's memmem is linear (two-way); check once for the whole search.
    MatchState ms;
    init_state(&ms, L, s, slen);
    step(&ms, slen - st);
    const void* q = plen == 0 ? s + st : memmem(s + st, slen - st, p, plen);
    if (q) {
      auto at = static_cast<const char*>(q) - s;
      lua_pushinteger(L, at + 1);
      lua_pushinteger(L, at + static_cast<ptrdiff_t>(plen));
      return 2;
    }
  } else {
    MatchState ms;
    const char* sstr = s + st;
    bool anchor = false;
    if (*p == '^') {
      p++;
      anchor = true;
    }
    init_state(&ms, L, s, slen);
    do {
      ms.level = ms.depth = 0;
      const char* q = match(&ms, sstr, p);
      if (q) {
        if (find) {
          lua_pushinteger(L, sstr - s + 1);
          lua_pushinteger(L, q - s);
          return push_captures(&ms, nullptr, nullptr) + 2;
        }
        return push_captures(&ms, sstr, q);
      }
    } while (sstr++ < ms.src_end && !anchor);
  }
  lua_pushnil(L);
  return 1;
}

int string_find(lua_State* L) {
  return str_find_aux(L, true);
}
int string_match(lua_State* L) {
  return str_find_aux(L, false);
}

// Upvalues: the subject, the pattern, the position to go on from.
int gmatch_aux(lua_State* L) {
  size_t slen;
  const char* s = lua_tolstring(L, lua_upvalueindex(1), &slen);
  const char* p = lua_tostring(L, lua_upvalueindex(2));
  auto pos = static_cast<size_t>(lua_tointeger(L, lua_upvalueindex(3)));
  MatchState ms;
  init_state(&ms, L, s, slen);
  for (const char* src = s + pos; src <= ms.src_end; src++) {
    ms.level = ms.depth = 0;
    const char* e = match(&ms, src, p);
    if (e != nullptr) {
      ptrdiff_t next = e - s;
      if (e == src) next++;  // an empty match: make progress
      lua_pushinteger(L, next);
      lua_replace(L, lua_upvalueindex(3));
      return push_captures(&ms, src, e);
    }
  }
  lua_pushinteger(L, static_cast<lua_Integer>(slen) + 1);  // exhausted: stay exhausted
  lua_replace(L, lua_upvalueindex(3));
  return 0;
}

int string_gmatch(lua_State* L) {
  luaL_checkstring(L, 1);
  luaL_checkstring(L, 2);
  lua_settop(L, 2);
  lua_pushinteger(L, 0);
  lua_pushcclosure(L, gmatch_aux, 3);
  return 1;
}

void add_s(MatchState* ms, luaL_Buffer* b, const char* s, const char* e) {
  size_t l;
  const char* news = lua_tolstring(ms->L, 3, &l);
  for (size_t i = 0; i < l; i++) {
    if (news[i] != kEsc) {
      luaL_addchar(b, news[i]);
    } else {
      i++;  // skip the escape
      if (!is_digit(uchar(news[i]))) {
        luaL_addchar(b, news[i]);
      } else if (news[i] == '0') {
        luaL_addlstring(b, s, static_cast<size_t>(e - s));
      } else {
        push_onecapture(ms, news[i] - '1', s, e);
        luaL_addvalue(b);
      }
    }
  }
}

void add_value(MatchState* ms, luaL_Buffer* b, const char* s, const char* e) {
  lua_State* L = ms->L;
  switch (lua_type(L, 3)) {
    case LUA_TNUMBER:
    case LUA_TSTRING:
      add_s(ms, b, s, e);
      return;
    case LUA_TFUNCTION: {
      lua_pushvalue(L, 3);
      int n = push_captures(ms, s, e);
      lua_call(L, n, 1);
      break;
    }
    case LUA_TTABLE:
      push_onecapture(ms, 0, s, e);
      lua_gettable(L, 3);
      break;
    default:
      break;
  }
  if (!lua_toboolean(L, -1)) {  // nil or false: keep the original text
    lua_pop(L, 1);
    lua_pushlstring(L, s, static_cast<size_t>(e - s));
  } else if (!lua_isstring(L, -1)) {
    luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
  }
  luaL_addvalue(b);
}

int string_gsub(lua_State* L) {
  size_t srcl;
  const char* src = luaL_checklstring(L, 1, &srcl);
  const char* p = luaL_checkstring(L, 2);
  int tr = lua_type(L, 3);
  int max_s = luaL_optint(L, 4, static_cast<int>(srcl + 1));
  bool anchor = (*p == '^') ? (p++, true) : false;
  if (!(tr == LUA_TNUMBER || tr == LUA_TSTRING || tr == LUA_TFUNCTION || tr == LUA_TTABLE))
    luaL_argerror(L, 3, "string/function/table expected");
  int n = 0;
  MatchState ms;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  init_state(&ms, L, src, srcl);
  while (n < max_s) {
    ms.level = ms.depth = 0;
    const char* e = match(&ms, src, p);
    if (e) {
      n++;
      add_value(&ms, &b, src, e);
    }
    if (e && e > src)  // a non-empty match: skip it
      src = e;
    else if (src < ms.src_end)
      luaL_addchar(&b, *src++);
    else
      break;
    if (anchor) break;
  }
  luaL_addlstring(&b, src, static_cast<size_t>(ms.src_end - src));
  luaL_pushresult(&b);
  lua_pushinteger(L, n);
  return 2;
}

}  // namespace

void install_bounded_patterns(lua_State* L, PatternCheck check) {
  g_check.store(check, std::memory_order_relaxed);
  lua_getglobal(L, "string");
  const luaL_Reg fns[] = {{"find", string_find},
                          {"match", string_match},
                          {"gmatch", string_gmatch},
                          {"gsub", string_gsub}};
  for (const auto& f : fns) {
    lua_pushcfunction(L, f.func);
    lua_setfield(L, -2, f.name);
  }
  lua_pop(L, 1);
}

}  // namespace orch
