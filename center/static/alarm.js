// A banner and a sound for new severe findings on the board. Both are switchable; the choice is
// remembered in localStorage. The sound is made with WebAudio (no file to fetch, nothing inline):
// three short beeps. Browsers only let a page play sound after the user interacted with it, so
// the audio context is created on the first click anywhere on the page.
'use strict';

const ALARM_KEYS = { sound: 'envwatch.alarm.sound', banner: 'envwatch.alarm.banner' };
const ALARM = { ctx: null, played: 0, shown: 0 };

function alarmOn(what) { return localStorage.getItem(ALARM_KEYS[what]) !== 'off'; } // on unless switched off

function setAlarm(what, on) {
  localStorage.setItem(ALARM_KEYS[what], on ? 'on' : 'off');
  renderAlarmSwitches();
}

function audio() {
  const Ctx = window.AudioContext || window.webkitAudioContext;
  if (!ALARM.ctx && Ctx) ALARM.ctx = new Ctx();
  return ALARM.ctx;
}

function beep() {
  ALARM.played += 1;
  document.body.dataset.alarmPlayed = String(ALARM.played); // for tests and for the curious
  const ctx = audio();
  if (!ctx) return;
  if (ctx.state === 'suspended') ctx.resume();
  for (let i = 0; i < 3; i += 1) {
    const t0 = ctx.currentTime + i * 0.25;
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.frequency.value = 880;
    gain.gain.setValueAtTime(0.0001, t0);
    gain.gain.exponentialRampToValueAtTime(0.3, t0 + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, t0 + 0.18);
    osc.connect(gain).connect(ctx.destination);
    osc.start(t0);
    osc.stop(t0 + 0.2);
  }
}

// A finding is severe when its severity is critical or major.
const isSevere = (a) => a.severity === 'critical' || a.severity === 'major';

// Called by the board for each alert that arrived live (never for the ones loaded with the page).
function alarmFor(alert, text, open) {
  if (!isSevere(alert)) return;
  if (alarmOn('sound')) beep();
  if (!alarmOn('banner')) return;
  ALARM.shown += 1;
  const banner = document.querySelector('#alarm-banner');
  const item = h('li', { class: `alarm-item level-${alert.severity}`, 'data-alert-id': alert.id },
    h('b', {}, t(`severity.${alert.severity}`, alert.severity)), ' ', text, ' ',
    h('button', { class: 'link', onclick: (e) => { e.stopPropagation(); open(); item.remove(); hideIfEmpty(); } }, t('alarm.open')),
    h('button', { class: 'link', onclick: (e) => { e.stopPropagation(); item.remove(); hideIfEmpty(); } }, t('alarm.dismiss')));
  banner.querySelector('ul').prepend(item);
  banner.hidden = false;
}

function hideIfEmpty() {
  const banner = document.querySelector('#alarm-banner');
  if (!banner.querySelector('li')) banner.hidden = true;
}

function renderAlarmSwitches() {
  for (const what of ['sound', 'banner']) {
    const b = document.querySelector(`#btn-alarm-${what}`);
    if (!b) continue;
    b.dataset.on = alarmOn(what) ? 'on' : 'off';
    b.textContent = `${t(`alarm.${what}`)}: ${t(alarmOn(what) ? 'alarm.on' : 'alarm.off')}`;
  }
}

function initAlarm() {
  for (const what of ['sound', 'banner']) {
    document.querySelector(`#btn-alarm-${what}`)?.addEventListener('click', () => setAlarm(what, !alarmOn(what)));
  }
  document.querySelector('#alarm-clear')?.addEventListener('click', () => {
    document.querySelector('#alarm-banner ul').replaceChildren();
    hideIfEmpty();
  });
  document.addEventListener('click', () => audio(), { once: true });
  renderAlarmSwitches();
}
