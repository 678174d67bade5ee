#!/usr/bin/env bash
# Install.ExportedSymbols: librawdax.so exports the public API and nothing
# else (docs/architecture.md, "Public surface").
#
# Reads the public headers (include/rawdax/*.h, comments left out) for what
# they mark RAWDAX_EXPORT: the classes ("class RAWDAX_EXPORT Name {", with
# the names their bodies declare) and the free functions, C and C++. Then
# every symbol `nm -D --defined-only` lists, demangled, must be one of:
#   - a C function declared RAWDAX_EXPORT (rawdax_client_connect, ...);
#   - rawdax::NAME(...), NAME a free function declared RAWDAX_EXPORT;
#   - rawdax::Class::member(...) [const], Class exported and member declared
#     in its body (constructors, destructor and operators included);
#   - the vtable or typeinfo of an exported class.
# Anything else fails the test, named: a type of the layers (rawdax::internal,
# rawdax::nbd, rawdax::control, rawdax::Catalog, ...), a nested Impl, a
# template instance of the standard library or of nlohmann::json, a static
# local. And the other way round, every exported class and function must be
# in the library (a definition lost, or a header that no longer exports).
#
# Usage: exported_symbols.sh LIBRAWDAX_SO INCLUDE_RAWDAX_DIR
set -euo pipefail
lib=$1 headers=$2
for tool in nm c++filt perl; do
  command -v "$tool" >/dev/null || { echo "exported_symbols: $tool not found" >&2; exit 1; }
done
[ -f "$lib" ] || { echo "exported_symbols: no library at $lib" >&2; exit 1; }

# The public headers' text without comments (export.h only defines the macro).
text=$(for h in "$headers"/*.h; do [ "$(basename "$h")" = export.h ] || cat "$h"; done |
  perl -0777 -pe 's{/\*.*?\*/}{}gs; s{//[^\n]*}{}g')

# "Class" for each exported class, and "Class::name" for each name followed by
# "(" in its body: its members (and, harmlessly, what inline bodies call).
classes=$(perl -0777 -ne 'print "$1\n" while /\b(?:class|struct)\s+RAWDAX_EXPORT\s+(\w+)[^{;]*\{/g' \
  <<<"$text" | sort -u)
members=$(perl -0777 -ne '
  while (/\b(?:class|struct)\s+RAWDAX_EXPORT\s+(\w+)[^{;]*\{/g) {
    my ($class, $start, $depth, $i) = ($1, pos, 1, pos);
    while ($depth && $i < length) {
      my $c = substr($_, $i++, 1);
      $depth++ if $c eq "{";
      $depth-- if $c eq "}";
    }
    my $body = substr($_, $start, $i - $start);
    print "${class}::$1\n" while $body =~ /(~?\b\w+|\boperator\s*[^\s(]+)\s*\(/g;
  }' <<<"$text" | sort -u)
# Free functions declared RAWDAX_EXPORT (C and C++): the first name before "(".
functions=$(perl -0777 -ne 'print "$1\n" while /\bRAWDAX_EXPORT\s+(?!class\b|struct\b)[^;{}(]*?(\w+)\s*\(/g' \
  <<<"$text" | sort -u)
[ -n "$classes" ] && [ -n "$functions" ] ||
  { echo "exported_symbols: found no RAWDAX_EXPORT declaration in $headers" >&2; exit 1; }

has() { grep -qxF -- "$2" <<<"$1"; }

symbols=$(nm -D --defined-only "$lib" | awk 'NF >= 3 { print $3 }' | sed 's/@.*//' | c++filt)
[ -n "$symbols" ] || { echo "exported_symbols: $lib exports nothing" >&2; exit 1; }

id='[A-Za-z_][A-Za-z0-9_]*'
class_data="^(typeinfo for|typeinfo name for|vtable for) rawdax::($id)\$"
c_function="^$id\$"
cxx_function="^rawdax::($id)\\(.*\\)( const)?\$"
cxx_member="^rawdax::($id)::(~?$id|operator[^[:space:](]+)\\(.*\\)( const)?\$"
# Each symbol with its name beside it: template arguments out (innermost first),
# so that names can be split on "::".
names=$(sed -E -e 's/\[abi:[a-z0-9]+\]//g' -e ':a' -e 's/<[^<>]*>//g' -e 'ta' <<<"$symbols")
bad=() seen_classes="" seen_functions=""
while IFS=$'\t' read -r sym name; do
  if [[ $name =~ $class_data ]]; then
    class=${BASH_REMATCH[2]}
    if has "$classes" "$class"; then seen_classes+="$class"$'\n'; continue; fi
  elif [[ $name =~ $c_function ]]; then
    if has "$functions" "$name"; then seen_functions+="$name"$'\n'; continue; fi
  elif [[ $name =~ $cxx_function ]]; then
    function=${BASH_REMATCH[1]}
    if has "$functions" "$function"; then seen_functions+="$function"$'\n'; continue; fi
  elif [[ $name =~ $cxx_member ]]; then
    class=${BASH_REMATCH[1]} member=${BASH_REMATCH[2]}
    if has "$classes" "$class" && has "$members" "$class::$member"; then
      seen_classes+="$class"$'\n'
      continue
    fi
  fi
  bad+=("$sym")
done < <(paste <(printf '%s\n' "$symbols") <(printf '%s\n' "$names"))

status=0
total=$(wc -l <<<"$symbols")
if [ "${#bad[@]}" -gt 0 ]; then
  echo "exported_symbols: ${#bad[@]} of $total symbols exported by $lib are not public API" \
    "(no RAWDAX_EXPORT declaration in $headers covers them):" >&2
  printf '  %s\n' "${bad[@]}" >&2
  status=1
fi
for class in $classes; do
  has "$seen_classes" "$class" ||
    { echo "exported_symbols: class rawdax::$class is RAWDAX_EXPORT but $lib exports none of it" >&2; status=1; }
done
for function in $functions; do
  has "$seen_functions" "$function" ||
    { echo "exported_symbols: $function is RAWDAX_EXPORT but $lib does not export it" >&2; status=1; }
done
[ "$status" = 0 ] && echo "exported_symbols: all $total symbols of $lib are public API" \
  "($(wc -l <<<"$classes") classes, $(wc -l <<<"$functions") functions)"
exit "$status"
