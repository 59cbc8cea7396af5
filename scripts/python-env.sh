# Sourced by the test scripts. `python_env VENV REQUIREMENTS` makes VENV a virtual
# environment with the pinned REQUIREMENTS, reinstalling only when they changed; where
# python3 lacks venv/ensurepip (a bare Debian without python3-venv) it installs with
# `pip install --target VENV/site` instead.
python_env() {
    local venv="$1" req="$2"
    if [[ -f "$venv/.requirements" ]] && cmp -s "$req" "$venv/.requirements"; then return; fi
    rm -rf "$venv"
    if python3 -m venv "$venv" 2>/dev/null; then
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    else
        echo "python3 -m venv unavailable; installing with pip --target" >&2
        rm -rf "$venv"  # a failed venv can leave a bin/python without pip behind
        python3 -m pip install --quiet --disable-pip-version-check --target "$venv/site" -r "$req"
    fi
    cp "$req" "$venv/.requirements"
}
